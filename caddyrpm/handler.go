package caddyrpm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler authenticates the request's API key against the rpm app's cached
// auth snapshots, enforces the RPM limits that apply, and hands the request
// on with the identity in placeholders.
type Handler struct {
	// KeySources are tried in order to find the API key. Default:
	// `Authorization: Bearer <key>`, then `x-api-key`.
	KeySources []KeySource `json:"key_sources,omitempty"`

	// KeyQuery names a query parameter that may carry the key. Default:
	// none (query strings end up in access logs).
	KeyQuery string `json:"key_query,omitempty"`

	// KeepCredentials keeps the key headers (and query parameter) on the
	// request handed on. Default: false, they are removed.
	KeepCredentials bool `json:"keep_credentials,omitempty"`

	// ErrorFormat is the error body style: openai, anthropic or problem.
	// Default: openai.
	ErrorFormat string `json:"error_format,omitempty"`

	// RateLimitHeaders selects the rate-limit headers sent: all, ietf,
	// legacy or off. Default: all. 429 responses always carry Retry-After.
	RateLimitHeaders string `json:"ratelimit_headers,omitempty"`

	// Zone names the counters of the route limits below; handlers and
	// instances with the same zone share them. Required with Limits.
	Zone string `json:"zone,omitempty"`

	// Limits are route limits per minute, checked together with the data
	// limits. Default: none.
	Limits []RouteLimit `json:"limits,omitempty"`

	app    *App
	logger *zap.Logger
	format errorFormat
}

// KeySource is one place to look for the API key.
type KeySource struct {
	// Header is the request header name.
	Header string `json:"header"`
	// Scheme, if set, is the auth scheme that must prefix the value
	// (e.g. "Bearer"); it is matched case-insensitively.
	Scheme string `json:"scheme,omitempty"`
}

// RouteLimit caps the requests this handler admits per minute.
type RouteLimit struct {
	// Scope is "user" (per user, across their keys) or "key" (per key).
	Scope string `json:"scope"`
	// Limit is the number of requests per minute; at least 1.
	Limit int64 `json:"limit"`
}

var zoneName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// reservedZone reports whether name is a policy name of the data limits,
// which a zone's counters and rate-limit headers would be confused with.
func reservedZone(name string) bool { return name == "user" || name == "group" }

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rpm",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, validates and finds the rpm app.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if len(h.KeySources) == 0 {
		h.KeySources = []KeySource{{Header: "Authorization", Scheme: "Bearer"}, {Header: "X-Api-Key"}}
	}
	for i, s := range h.KeySources {
		if s.Header == "" {
			return fmt.Errorf("key_sources[%d]: header is required", i)
		}
		h.KeySources[i].Header = http.CanonicalHeaderKey(s.Header)
	}
	if h.ErrorFormat == "" {
		h.ErrorFormat = "openai"
	}
	f, ok := errorFormats[h.ErrorFormat]
	if !ok {
		return fmt.Errorf("error_format must be openai, anthropic or problem, not %q", h.ErrorFormat)
	}
	h.format = f
	switch h.RateLimitHeaders {
	case "":
		h.RateLimitHeaders = "all"
	case "all", "ietf", "legacy", "off":
	default:
		return fmt.Errorf("ratelimit_headers must be all, ietf, legacy or off, not %q", h.RateLimitHeaders)
	}
	if err := h.validateLimits(); err != nil {
		return err
	}
	appIface, err := ctx.App("rpm")
	if err != nil {
		return fmt.Errorf("getting rpm app: %w", err)
	}
	h.app = appIface.(*App)
	if h.Zone != "" {
		h.app.zones.add(h.Zone, h.Limits)
	}
	return nil
}

func (h *Handler) validateLimits() error {
	if len(h.Limits) > 0 && h.Zone == "" {
		return errors.New("a route limit needs a zone")
	}
	if h.Zone != "" && !zoneName.MatchString(h.Zone) {
		return fmt.Errorf("zone %q: use 1-64 letters, digits, '.', '_' or '-'", h.Zone)
	}
	if reservedZone(h.Zone) {
		return fmt.Errorf("zone %q is reserved for the data limits' policy names", h.Zone)
	}
	seen := map[string]bool{}
	for _, l := range h.Limits {
		if l.Scope != "user" && l.Scope != "key" {
			return fmt.Errorf("route limit scope must be user or key, not %q", l.Scope)
		}
		if seen[l.Scope] {
			return fmt.Errorf("duplicate route limit for scope %s", l.Scope)
		}
		seen[l.Scope] = true
		if l.Limit < 1 {
			return fmt.Errorf("route limit %s must be at least 1, not %d", l.Scope, l.Limit)
		}
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	raw, problem := h.extractKey(r)
	if problem != nil {
		return h.deny(w, problem)
	}
	sum := sha256.Sum256([]byte(raw))
	if !h.app.keyFilter.MayContain(&sum) {
		// Not a key of the store: refused without a cache or store lookup,
		// so random keys cost neither a query nor a Redis entry.
		h.app.metrics.keyFilterRejections.Inc()
		return h.deny(w, errInvalidKey)
	}
	snap, err := h.app.cache.Get(r.Context(), store.HexHash(&sum))
	if err != nil {
		if r.Context().Err() != nil {
			return h.clientGone(w, r, "auth")
		}
		h.logger.Warn("auth snapshot unavailable", zap.Error(err))
		return h.deny(w, errAuthUnavailable)
	}
	if problem := h.authorize(r, snap); problem != nil {
		return h.deny(w, problem)
	}

	counters := h.counters(snap)
	start := time.Now()
	res, err := h.app.limiter.Check(r.Context(), counters)
	if len(counters) > 0 {
		h.app.metrics.checkDuration.Observe(time.Since(start).Seconds())
	}
	switch {
	case err != nil:
		if r.Context().Err() != nil {
			// The check ended because the client did, not Redis: there is
			// nobody to admit, and nothing to fail open for.
			return h.clientGone(w, r, "limit")
		}
		if h.app.OnRedisError == "closed" {
			return h.deny(w, errLimiterUnavailable)
		}
		// Fail open: Redis trouble never blocks traffic. The limiter logs
		// (rate-limited) and the breaker keeps this path fast.
		h.app.metrics.failOpens.Inc()
		h.app.metrics.decisions.WithLabelValues("admitted", "fail_open").Inc()
	case !res.Allowed:
		return h.refuse(w, snap, counters, res)
	default:
		h.setRateLimitHeaders(w.Header(), counters, res)
		h.app.metrics.admittedOK.Inc()
	}

	h.setPlaceholders(r, snap)
	if !h.KeepCredentials {
		h.stripCredentials(r)
	}
	return next.ServeHTTP(w, r)
}

// statusClientClosedRequest is the status Caddy's reverse_proxy records for
// a client that went away before its answer: nginx's 499, in no standard.
const statusClientClosedRequest = 499

// clientGone ends a request whose client went away (its context ended)
// before it was decided: it is not handed on, and it is no Redis or store
// failure, so it counts neither as fail-open nor towards the breaker. Like
// reverse_proxy it records 499 for the access log, writes no body and
// returns no error, so Caddy logs no error and runs no error routes for a
// client that cannot read them; the decision is counted as
// decisions_total{result="client_gone",reason=stage} and logged at debug.
func (h *Handler) clientGone(w http.ResponseWriter, r *http.Request, stage string) error {
	h.app.metrics.decisions.WithLabelValues("client_gone", stage).Inc()
	if c := h.logger.Check(zap.DebugLevel, "client went away before the request was decided"); c != nil {
		c.Write(zap.String("stage", stage), zap.Error(context.Cause(r.Context())))
	}
	w.WriteHeader(statusClientClosedRequest)
	return nil
}

// authorize applies the checks of the auth table in order.
func (h *Handler) authorize(r *http.Request, s *snapshot.Snapshot) *apiError {
	switch {
	case s.NotFound:
		return errInvalidKey
	case s.Status != "active":
		return errKeyDisabled
	case s.Expired(time.Now()):
		return errKeyExpired
	case s.QuotaExhausted():
		return errQuotaExhausted
	case s.HasIPRules() && !s.IPAllowed(clientIP(r)):
		return errIPNotAllowed
	case s.User == nil || s.User.Status != "active":
		return errUserDisabled
	case s.Group != nil && s.Group.Status != "active":
		return errGroupDisabled
	}
	return nil
}

// clientIP is Caddy's idea of the client address, which honours
// trusted_proxies; an unparsable one matches no list entry.
func clientIP(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip, _ := netip.ParseAddr(s)
	return ip
}

// setPlaceholders makes the identity available as placeholders. They are
// computed when used, so a request that uses none pays one allocation.
func (h *Handler) setPlaceholders(r *http.Request, s *snapshot.Snapshot) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	repl.Map(func(key string) (any, bool) { return identityPlaceholder(s, key) })
}

// identityPlaceholder is the value of one http.auth.user.* or http.rpm.*
// placeholder; the group ones are empty for a key without a group.
func identityPlaceholder(s *snapshot.Snapshot, key string) (any, bool) {
	switch key {
	case "http.auth.user.id", "http.rpm.user_id":
		return strconv.FormatInt(s.UserID, 10), true
	case "http.rpm.api_key_id":
		return strconv.FormatInt(s.APIKeyID, 10), true
	case "http.rpm.group_id", "http.rpm.group_name", "http.rpm.platform":
		g := s.Group
		switch {
		case g == nil:
			return "", true
		case key == "http.rpm.group_id":
			return strconv.FormatInt(g.ID, 10), true
		case key == "http.rpm.group_name":
			return g.Name, true
		default:
			return g.Platform, true
		}
	}
	return nil, false
}

// stripCredentials removes the key sources' credentials from the request,
// and only ours: an Authorization header of another scheme (Basic, for a
// basic_auth later in the route) stays for whoever checks it.
func (h *Handler) stripCredentials(r *http.Request) {
	for _, s := range h.KeySources {
		if _, ours := s.credential(r.Header.Get(s.Header)); ours {
			r.Header.Del(s.Header)
		}
	}
	if h.KeyQuery != "" {
		r.URL.RawQuery = withoutQueryParam(r.URL.RawQuery, h.KeyQuery)
	}
}

// counters lists the limits that apply (spec §6): user, the (user, group)
// layer (override or group limit) and the route limits.
func (h *Handler) counters(s *snapshot.Snapshot) []limiter.Counter {
	keys := h.app.keys
	cs := make([]limiter.Counter, 0, 2+len(h.Limits))
	var gid int64
	if s.Group != nil {
		gid = s.Group.ID
	}
	if s.User.RPMLimit > 0 {
		cs = append(cs, limiter.Counter{Key: keys.User(s.UserID), Limit: s.User.RPMLimit,
			Policy: "user", Code: codeUserRPM, UserID: s.UserID, GroupID: gid})
	}
	if s.Group != nil {
		limit := s.Group.RPMLimit
		if o := s.User.UserGroupRPMOverride; o != nil {
			limit = *o // 0 exempts the user in this group
		}
		if limit > 0 {
			cs = append(cs, limiter.Counter{Key: keys.UserGroup(s.UserID, gid), Limit: limit,
				Policy: "group", Code: codeGroupRPM, UserID: s.UserID, GroupID: gid})
		}
	}
	for _, l := range h.Limits {
		key := keys.ZoneUser(h.Zone, s.UserID)
		if l.Scope == "key" {
			key = keys.ZoneKey(h.Zone, s.UserID, s.APIKeyID)
		}
		cs = append(cs, limiter.Counter{Key: key, Limit: l.Limit,
			Policy: h.Zone, Code: codeRouteRPM, UserID: s.UserID, GroupID: gid})
	}
	return cs
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
