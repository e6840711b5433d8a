package caddyrpm

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// Each value rule is one function below. Validate applies them to every
// configuration, JSON or Caddyfile, after Provision set the defaults; the
// Caddyfile parser calls the same functions so that its errors name the
// line of the bad value.

// Validate checks the app's values. Provision calls it before connecting
// anywhere, so a bad configuration fails with its own error, not with a
// connection error it caused.
func (a *App) Validate() error {
	switch {
	case a.Postgres != "" && a.KeysFile != "":
		return errors.New("rpm: postgres and keys_file are exclusive; set one")
	case a.Postgres == "" && a.KeysFile == "":
		return errors.New("rpm: a store is required: set postgres or keys_file")
	}
	if err := checkOnRedisError(a.OnRedisError); err != nil {
		return fmt.Errorf("rpm: %w", err)
	}
	if err := checkReservations(a.Reservations, a.ReservationTTL); err != nil {
		return fmt.Errorf("rpm: %w", err)
	}
	if a.RedisCluster && len(a.Redis) == 0 {
		return errors.New("rpm: redis_cluster needs redis addresses")
	}
	if err := checkKeyPrefix(a.RedisKeyPrefix); err != nil {
		return fmt.Errorf("rpm: %w", err)
	}
	if err := checkConcurrencyLease(time.Duration(a.ConcurrencyLease)); err != nil {
		return fmt.Errorf("rpm: %w", err)
	}
	if a.Cache != nil && a.Cache.JitterPercent != nil {
		if err := checkJitter(*a.Cache.JitterPercent); err != nil {
			return fmt.Errorf("rpm: %w", err)
		}
	}
	return nil
}

// checkOnRedisError allows "open" and "closed" ("" is the default, open).
func checkOnRedisError(v string) error {
	if v != "" && v != "open" && v != "closed" {
		return fmt.Errorf("on_redis_error must be open or closed, not '%s'", v)
	}
	return nil
}

// checkReservations refuses a negative reservation_ttl, and reservations
// turned on with a reservation_ttl of 0 (nil: not set).
func checkReservations(on *bool, ttl *caddy.Duration) error {
	switch {
	case ttl != nil && *ttl < 0:
		return fmt.Errorf("reservation_ttl must not be negative, not %s", time.Duration(*ttl))
	case on != nil && *on && ttl != nil && *ttl == 0:
		return errors.New("reservations on needs a reservation_ttl above 0")
	}
	return nil
}

// minConcurrencyLease is the shortest concurrency_lease: renewals run
// every quarter of it, and a shorter one would have them race the
// requests they keep alive.
const minConcurrencyLease = time.Second

// checkConcurrencyLease allows 0 (the default) and at least
// minConcurrencyLease.
func checkConcurrencyLease(d time.Duration) error {
	if d != 0 && d < minConcurrencyLease {
		return fmt.Errorf("concurrency_lease must be at least %s, not %s", minConcurrencyLease, d)
	}
	return nil
}

// checkJitter allows a percentage in [0, 100).
func checkJitter(j float64) error {
	if j < 0 || j >= 100 {
		return fmt.Errorf("cache jitter must be a percentage in [0, 100), not %v", j)
	}
	return nil
}

// Validate checks the handler's values.
func (h *Handler) Validate() error {
	for i, s := range h.KeySources {
		if s.Header == "" {
			return fmt.Errorf("key_sources[%d]: header is required", i)
		}
	}
	if err := checkErrorFormat(h.ErrorFormat); err != nil {
		return err
	}
	if err := checkRateLimitHeaders(h.RateLimitHeaders); err != nil {
		return err
	}
	return h.checkRoute()
}

// checkRoute checks the zone and its limits (a *gateway.RouteError whose
// index is in Limits followed by Concurrency).
func (h *Handler) checkRoute() error {
	route, err := h.gatewayRoute()
	if err != nil {
		return err
	}
	return gateway.CheckRoute(h.Zone, route)
}

// gatewayRoute is Limits followed by Concurrency as the gateway takes
// them; an unknown scope is a *gateway.RouteError.
func (h *Handler) gatewayRoute() ([]gateway.RouteLimit, error) {
	route := make([]gateway.RouteLimit, 0, len(h.Limits)+len(h.Concurrency))
	for i, l := range h.Limits {
		scope, err := routeScope(l.Scope, false)
		if err != nil {
			return route, &gateway.RouteError{Limit: i, Err: err}
		}
		route = append(route, gateway.RouteLimit{Zone: h.Zone, Scope: scope, Limit: l.Limit})
	}
	for i, l := range h.Concurrency {
		scope, err := routeScope(l.Scope, true)
		if err != nil {
			return route, &gateway.RouteError{Limit: len(h.Limits) + i, Err: err}
		}
		route = append(route, gateway.RouteLimit{Zone: h.Zone, Scope: scope, Limit: l.Limit})
	}
	return route, nil
}

// routeScope is the gateway's scope of a route limit's (or with
// concurrency, a route cap's) scope name.
func routeScope(name string, concurrency bool) (gateway.LimitScope, error) {
	switch {
	case name == "user" && concurrency:
		return gateway.LimitRouteConcurrencyUser, nil
	case name == "key" && concurrency:
		return gateway.LimitRouteConcurrencyKey, nil
	case name == "user":
		return gateway.LimitRouteUser, nil
	case name == "key":
		return gateway.LimitRouteKey, nil
	}
	if concurrency {
		return 0, fmt.Errorf("route concurrency scope must be user or key, not '%s'", name)
	}
	return 0, fmt.Errorf("route limit scope must be user or key, not '%s'", name)
}

// checkErrorFormat allows the names of errorFormats.
func checkErrorFormat(name string) error {
	if _, ok := errorFormats[name]; !ok {
		return fmt.Errorf("error_format must be one of %s, not '%s'",
			strings.Join(slices.Sorted(maps.Keys(errorFormats)), ", "), name)
	}
	return nil
}

// rateLimitHeaderModes are the values of ratelimit_headers.
var rateLimitHeaderModes = []string{"all", "ietf", "legacy", "off"}

func checkRateLimitHeaders(mode string) error {
	if !slices.Contains(rateLimitHeaderModes, mode) {
		return fmt.Errorf("ratelimit_headers must be one of %s, not '%s'", strings.Join(rateLimitHeaderModes, ", "), mode)
	}
	return nil
}
