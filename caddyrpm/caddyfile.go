package caddyrpm

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("rpm", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("rpm", parseHandlerDirective)
	httpcaddyfile.RegisterDirectiveOrder("rpm", httpcaddyfile.Before, "basic_auth")
}

// parseGlobalOption parses the rpm global option:
//
//	rpm {
//		postgres       <dsn>
//		auto_migrate
//		keys_file      <path>
//		store_timeout  <duration>
//		redis          <url> [<url>...]
//		redis_cluster
//		redis_timeout  <duration>
//		reservations   on|off
//		reservation_ttl <duration>|off
//		on_redis_error open|closed
//		concurrency_lease <duration>
//		key_prefix     <prefix>
//		cache {
//			l1_size        <n>
//			l1_ttl         <duration>
//			l2_ttl         <duration>
//			negative_ttl   <duration>
//			jitter         <percent>%
//			stale_if_error <duration>
//		}
//		admin_token    <token>
//		admin_token_file <path>
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		d.Next() // to the option name, so the error names its line
		return nil, d.Err("the rpm global option is given more than once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "rpm", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile fills the app from its global option block.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	return eachOption(d, 0, "rpm", nil, func(opt string) (err error) {
		switch opt {
		case "postgres":
			err = oneArg(d, &a.Postgres)
		case "keys_file":
			err = oneArg(d, &a.KeysFile)
		case "key_prefix":
			err = checked(d, oneArg(d, &a.RedisKeyPrefix), func() error { return checkKeyPrefix(a.RedisKeyPrefix) })
		case "admin_token":
			err = nonEmptyArg(d, &a.AdminAuthToken)
			if err == nil && a.AdminTokenFile != "" {
				err = d.Errf("rpm: admin_token and admin_token_file are exclusive; set one")
			}
		case "admin_token_file":
			err = nonEmptyArg(d, &a.AdminTokenFile)
			if err == nil && a.AdminAuthToken != "" {
				err = d.Errf("rpm: admin_token and admin_token_file are exclusive; set one")
			}
		case "on_redis_error":
			err = checked(d, oneArg(d, &a.OnRedisError), func() error { return checkOnRedisError(a.OnRedisError) })
		case "redis_timeout":
			err = durationArg(d, &a.RedisTimeout)
		case "reservations":
			a.Reservations = new(bool)
			err = checked(d, onOffArg(d, a.Reservations), func() error { return checkReservations(a.Reservations, a.ReservationTTL) })
		case "reservation_ttl":
			a.ReservationTTL = new(caddy.Duration)
			err = checked(d, offOrDurationArg(d, a.ReservationTTL), func() error { return checkReservations(a.Reservations, a.ReservationTTL) })
		case "store_timeout":
			err = durationArg(d, &a.StoreTimeout)
		case "concurrency_lease":
			err = checked(d, durationArg(d, &a.ConcurrencyLease), func() error {
				return checkConcurrencyLease(time.Duration(a.ConcurrencyLease))
			})
		case "auto_migrate":
			err = flag(d, &a.AutoMigrate)
		case "redis_cluster":
			err = flag(d, &a.RedisCluster)
		case "redis":
			a.Redis = d.RemainingArgs()
			if len(a.Redis) == 0 {
				err = d.ArgErr()
			}
		case "cache":
			a.Cache = new(CacheOptions)
			err = a.Cache.unmarshalCaddyfile(d)
		default:
			err = d.Errf("rpm: unknown option '%s'", opt)
		}
		return err
	})
}

func (c *CacheOptions) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	return eachOption(d, d.Nesting(), "rpm cache", nil, func(opt string) (err error) {
		switch opt {
		case "l1_size":
			var s string
			if err = oneArg(d, &s); err == nil {
				c.L1Size, err = strconv.Atoi(s)
				if err != nil || c.L1Size < 1 {
					err = d.Errf("rpm cache: l1_size must be a positive integer, not '%s'", s)
				}
			}
		case "l1_ttl":
			err = durationArg(d, &c.L1TTL)
		case "l2_ttl":
			err = durationArg(d, &c.L2TTL)
		case "negative_ttl":
			err = durationArg(d, &c.NegativeTTL)
		case "stale_if_error":
			err = durationArg(d, &c.StaleIfError)
		case "jitter":
			var s string
			if err = oneArg(d, &s); err == nil {
				var j float64
				if j, err = strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64); err != nil {
					err = d.Errf("rpm cache: jitter must be a percentage, not '%s'", s)
				} else {
					c.JitterPercent = &j
					err = checked(d, nil, func() error { return checkJitter(j) })
				}
			}
		default:
			err = d.Errf("rpm cache: unknown option '%s'", opt)
		}
		return err
	})
}

// parseHandlerDirective parses the rpm directive:
//
//	rpm [<matcher>] {
//		key_header        <name> [<scheme>]
//		key_query         <name>
//		keep_credentials
//		error_format      openai|anthropic|problem
//		ratelimit_headers all|ietf|legacy|off
//		zone              <name>
//		limit             user|key <n>
//		concurrency       user|key <n>
//		shadow
//	}
func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile fills the handler from its directive block.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	var zoneLine int
	var limitLines, concLines []int // of h.Limits[i], h.Concurrency[i]
	repeatable := []string{"key_header", "limit", "concurrency"}
	err := eachOption(d, 0, "rpm", repeatable, func(opt string) (err error) {
		switch opt {
		case "key_header":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("rpm: key_header takes a header name and an optional scheme")
			}
			src := KeySource{Header: args[0]}
			if len(args) == 2 {
				src.Scheme = args[1]
			}
			h.KeySources = append(h.KeySources, src)
		case "key_query":
			err = oneArg(d, &h.KeyQuery)
		case "keep_credentials":
			err = flag(d, &h.KeepCredentials)
		case "error_format":
			err = checked(d, oneArg(d, &h.ErrorFormat), func() error { return checkErrorFormat(h.ErrorFormat) })
		case "ratelimit_headers":
			err = checked(d, oneArg(d, &h.RateLimitHeaders), func() error { return checkRateLimitHeaders(h.RateLimitHeaders) })
		case "zone":
			zoneLine = d.Line()
			err = checked(d, oneArg(d, &h.Zone), func() error { return gateway.CheckZone(h.Zone) })
		case "limit":
			limitLines = append(limitLines, d.Line())
			err = unmarshalRouteLimit(d, &h.Limits, "a number per minute")
		case "concurrency":
			concLines = append(concLines, d.Line())
			err = unmarshalRouteLimit(d, &h.Concurrency, "a number of requests at once")
		case "shadow":
			err = flag(d, &h.Shadow)
		default:
			err = d.Errf("rpm: unknown option '%s'", opt)
		}
		return err
	})
	if err != nil {
		return err
	}
	if h.Zone == "" {
		switch {
		case len(h.Limits) > 0:
			return d.Errf("rpm: 'limit' on line %d needs a 'zone' in the same block", limitLines[len(limitLines)-1])
		case len(h.Concurrency) > 0:
			return d.Errf("rpm: 'concurrency' on line %d needs a 'zone' in the same block", concLines[len(concLines)-1])
		}
	}
	// The values, checked as Validate checks them; the error names the
	// line of the limit (or zone) at fault. Route errors index Limits
	// followed by Concurrency.
	routeLines := append(limitLines, concLines...)
	var re *gateway.RouteError
	if err := h.checkRoute(); errors.As(err, &re) {
		line := zoneLine
		if re.Limit >= 0 {
			line = routeLines[re.Limit]
		}
		return fmt.Errorf("rpm: %w, at %s:%d", re.Err, d.File(), line)
	} else if err != nil {
		return d.Errf("rpm: %v", err)
	}
	return nil
}

// unmarshalRouteLimit parses "limit|concurrency user|key <n>" into dst;
// unit says what n counts.
func unmarshalRouteLimit(d *caddyfile.Dispenser, dst *[]RouteLimit, unit string) error {
	opt := d.Val()
	var scope, n string
	if !d.Args(&scope, &n) || d.NextArg() {
		return d.Errf("rpm: %s takes a scope (user or key) and %s", opt, unit)
	}
	limit, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return d.Errf("rpm: %s %s must be a whole number of at least 1, not '%s'", opt, scope, n)
	}
	*dst = append(*dst, RouteLimit{Scope: scope, Limit: limit})
	return nil
}

// eachOption calls parse with the name of every option of the block at
// nesting, in order, after refusing the second use of an option that is
// not repeatable; what names the block in that error ("rpm", "rpm
// cache"). It stops at the first error.
func eachOption(d *caddyfile.Dispenser, nesting int, what string, repeatable []string, parse func(opt string) error) error {
	seen := map[string]bool{}
	for d.NextBlock(nesting) {
		opt := d.Val()
		if seen[opt] && !slices.Contains(repeatable, opt) {
			return d.Errf("%s: duplicate option '%s'", what, opt)
		}
		seen[opt] = true
		if err := parse(opt); err != nil {
			return err
		}
	}
	return nil
}

// checked is err, or when there is none, the error of check (a value
// rule, see Validate) at the current line.
func checked(d *caddyfile.Dispenser, err error, check func() error) error {
	if err != nil {
		return err
	}
	if cerr := check(); cerr != nil {
		return d.Errf("rpm: %v", cerr)
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.AllArgs(dst) {
		return d.Errf("'%s' takes exactly one argument", d.Val())
	}
	return nil
}

// nonEmptyArg is oneArg for options where an empty value would be lost:
// JSON omits it, so `admin_token ""` would silently mean "no token".
func nonEmptyArg(d *caddyfile.Dispenser, dst *string) error {
	opt := d.Val()
	if err := oneArg(d, dst); err != nil {
		return err
	}
	if *dst == "" {
		return d.Errf("rpm: '%s' must not be empty", opt)
	}
	return nil
}

func flag(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

// onOffArg parses one argument, on or off.
func onOffArg(d *caddyfile.Dispenser, dst *bool) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	switch s {
	case "on", "off":
		*dst = s == "on"
		return nil
	}
	return d.Errf("'%s' must be on or off, not '%s'", opt, s)
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil || v <= 0 {
		return d.Errf("'%s' must be a positive duration, not '%s'", opt, s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// offOrDurationArg reads one argument, a duration >= 0 or "off" (0).
func offOrDurationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	if s == "off" {
		*dst = 0
		return nil
	}
	v, err := caddy.ParseDuration(s)
	if err != nil || v < 0 {
		return d.Errf("'%s' must be a duration or off, not '%s'", opt, s)
	}
	*dst = caddy.Duration(v)
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
