package caddyrpm

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
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

	// Zone names the counters and slot sets of the route limits below;
	// handlers and instances with the same zone share them. Required with
	// Limits or Concurrency.
	Zone string `json:"zone,omitempty"`

	// Limits are route limits per minute, checked together with the data
	// limits. Default: none.
	Limits []RouteLimit `json:"limits,omitempty"`

	// Concurrency are route caps on requests in flight (Limit is the
	// number of requests at once), checked together with the limits and
	// the user's concurrency; a request holds its place until its response
	// is over. Default: none.
	Concurrency []RouteLimit `json:"concurrency,omitempty"`

	// Shadow makes this handler's limit checks observe instead of enforce
	// (shadow mode): a request that a limit would refuse is admitted, like
	// a refused one it is counted in none of its limits, and it is counted
	// in caddy_rpm_shadow_refusals_total, logged at most once per user and
	// window, and marked with its code in {http.rpm.shadow_refused}.
	// Authentication is enforced as usual. Default: false.
	Shadow bool `json:"shadow,omitempty"`

	app     *App
	gateway *gateway.Gateway
	// route is Zone and Limits as the gateway takes them.
	route  []gateway.RouteLimit
	logger *zap.Logger
	format errorFormat
}

// KeySource is one place to look for the API key.
type KeySource struct {
	// Header is the request header name. Provision puts it in canonical
	// form, the form net/http gives the names of the headers it receives,
	// so the request's header map is read with it directly: Header.Get and
	// Header.Del would put it in that form again on every request.
	Header string `json:"header"`
	// Scheme, if set, is the auth scheme that must prefix the value
	// (e.g. "Bearer"); it is matched case-insensitively.
	Scheme string `json:"scheme,omitempty"`
}

// RouteLimit caps the requests this handler admits per minute (Limits) or
// at once (Concurrency).
type RouteLimit struct {
	// Scope is "user" (per user, across their keys) or "key" (per key).
	Scope string `json:"scope"`
	// Limit is the number of requests per minute (Limits) or in flight
	// (Concurrency); at least 1.
	Limit int64 `json:"limit"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rpm",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and finds the rpm app; Validate checks the
// values.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.provisionKeySources()
	if h.ErrorFormat == "" {
		h.ErrorFormat = "openai"
	}
	h.format = errorFormats[h.ErrorFormat]
	if h.RateLimitHeaders == "" {
		h.RateLimitHeaders = "all"
	}
	h.route, _ = h.gatewayRoute() // an unknown scope fails Validate
	appIface, err := ctx.App("rpm")
	if err != nil {
		return fmt.Errorf("getting rpm app: %w", err)
	}
	h.app = appIface.(*App)
	h.gateway = h.app.gateway
	h.gateway.DeclareRoute(h.route)
	return nil
}

// provisionKeySources sets the default key sources and puts the header
// names in canonical form.
func (h *Handler) provisionKeySources() {
	if len(h.KeySources) == 0 {
		h.KeySources = []KeySource{{Header: "Authorization", Scheme: "Bearer"}, {Header: "X-Api-Key"}}
	}
	for i, s := range h.KeySources {
		h.KeySources[i].Header = http.CanonicalHeaderKey(s.Header)
	}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	lease, handOn, err := h.admit(w, r)
	if !handOn {
		return err
	}
	// The request's places under the concurrency caps (if any) are held
	// until the response is over: next returns once the response is fully
	// written (streams included), or the client went away, or the upstream
	// failed.
	defer lease.Release()
	return next.ServeHTTP(w, r)
}

// admit decides the request. It answers the requests it does not hand on
// (handOn false, with the error for Caddy), and prepares the others: rate-
// limit headers, placeholders, credentials removed, and the lease on their
// concurrency places to release when the response is over. It is a
// function of its own so that its frame, the decision's included, is off
// the stack while the rest of the route runs: that part of a connection's
// stack is the deepest, and every byte added there makes the stack grow
// (and be copied) again after each GC has shrunk it.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (lease *limiter.Lease, handOn bool, err error) {
	raw, problem := h.extractKey(r)
	if problem != nil {
		return nil, false, h.deny(w, problem)
	}
	// Hashed from a copy on the stack: []byte(raw) of a key longer than
	// 32 bytes (most are) would be a heap allocation per request.
	var keyBytes [128]byte
	sum := sha256.Sum256(append(keyBytes[:0], raw...))
	if !h.gateway.MayBeKey(&sum) {
		// Not a key of the store: refused without a cache or store lookup,
		// so random keys cost neither a query nor a Redis entry.
		h.app.metrics.keyFilterRejections.Inc()
		return nil, false, h.deny(w, errInvalidKey)
	}
	snap, err := h.gateway.Snapshot(r.Context(), &sum)
	if err != nil {
		if r.Context().Err() != nil {
			return nil, false, h.clientGone(w, r, "auth")
		}
		h.logger.Warn("auth snapshot unavailable", zap.Error(err))
		return nil, false, h.deny(w, errAuthUnavailable)
	}
	// One reading of the clock serves the key's expiry and the check's
	// start (so the check's time includes authorize's few comparisons): a
	// reading costs tens of nanoseconds on virtual machines.
	now := time.Now()
	if problem := h.authorize(r, snap, now); problem != nil {
		return nil, false, h.deny(w, problem)
	}

	d := h.gateway.Check(r.Context(), snap, h.route)
	if len(d.Limits()) > 0 && !d.Local {
		// Only checks that asked the limiter's backend are timed: the many
		// decided from reserved units or the deny cache take no time worth
		// a bucket, and would hide the backend's latency in the quantiles.
		h.app.metrics.checkDuration.Observe(time.Since(now).Seconds())
	}
	if h.Shadow {
		d.Shadow()
	}
	var shadowCode string
	switch d.Outcome {
	case gateway.Abandoned:
		// The check ended because the client did, not Redis: there is
		// nobody to admit, and nothing to fail open for.
		return nil, false, h.clientGone(w, r, "limit")
	case gateway.Unavailable:
		return nil, false, h.deny(w, errLimiterUnavailable)
	case gateway.AdmittedFailOpen:
		// Redis trouble never blocks traffic. The limiter logs
		// (rate-limited) and the breaker keeps this path fast.
		h.app.metrics.failOpens.Inc()
		h.app.metrics.decisions.WithLabelValues("admitted", "fail_open").Inc()
	case gateway.Refused:
		return nil, false, h.refuse(w, snap, &d)
	case gateway.Admitted:
		h.setRateLimitHeaders(w.Header(), &d)
		h.app.metrics.admittedOK.Inc()
	case gateway.ShadowRefused:
		// The headers tell what the limits say, as on any admitted request
		// (r=0 for the full one); only the 429 is left out.
		shadowCode = h.shadowRefused(snap, &d)
		h.setRateLimitHeaders(w.Header(), &d)
	}

	h.setPlaceholders(r, snap, shadowCode)
	if !h.KeepCredentials {
		h.stripCredentials(r)
	}
	// Only an admitted request holds a lease (nil otherwise).
	return d.Lease, true, nil
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

// authorize applies the authentication rules (gateway.Authorize) at now;
// the client address is only looked up for keys with IP lists.
func (h *Handler) authorize(r *http.Request, s *snapshot.Snapshot, now time.Time) *apiError {
	var ip netip.Addr
	if s.HasIPRules() {
		ip = clientIP(r)
	}
	return refusals[gateway.Authorize(s, now, ip)]
}

// refusals are the answers to gateway.Authorize's refusals; nil lets the
// request on.
var refusals = [...]*apiError{
	gateway.NotRefused:     nil,
	gateway.UnknownKey:     errInvalidKey,
	gateway.KeyDisabled:    errKeyDisabled,
	gateway.KeyExpired:     errKeyExpired,
	gateway.QuotaExhausted: errQuotaExhausted,
	gateway.IPNotAllowed:   errIPNotAllowed,
	gateway.UserDisabled:   errUserDisabled,
	gateway.GroupDisabled:  errGroupDisabled,
}

// clientIP is Caddy's idea of the client address, which honours
// trusted_proxies; an unparsable one matches no list entry.
func clientIP(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	ip, _ := netip.ParseAddr(s)
	return ip
}

// setPlaceholders makes the identity and the shadow-mode refusal code
// available as placeholders. They are computed when used, so a request that
// uses none pays one allocation.
func (h *Handler) setPlaceholders(r *http.Request, s *snapshot.Snapshot, shadowCode string) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	repl.Map(func(key string) (any, bool) {
		if key == shadowPlaceholder {
			return shadowCode, true
		}
		return identityPlaceholder(s, key)
	})
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
		values := r.Header[s.Header] // canonical names: see KeySource.Header
		if len(values) == 0 {
			continue
		}
		if _, ours := s.credential(values[0]); ours {
			delete(r.Header, s.Header)
		}
	}
	if h.KeyQuery != "" {
		r.URL.RawQuery = withoutQueryParam(r.URL.RawQuery, h.KeyQuery)
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
