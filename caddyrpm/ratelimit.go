package caddyrpm

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// policyName is a limit's name in the RateLimit headers: "user", "group"
// (the group's limit or the user's override in it) or the route zone; in
// logs, a concurrency cap's name the same way.
func policyName(l *gateway.Limit) string {
	switch l.Scope {
	case gateway.LimitUser, gateway.LimitConcurrencyUser:
		return "user"
	case gateway.LimitGroup, gateway.LimitOverride:
		return "group"
	}
	return l.Zone
}

// refusalCode is the error code of a refusal by a limit of this scope.
func refusalCode(scope gateway.LimitScope) string {
	if scope.Concurrency() {
		return codeConcurrency
	}
	switch scope {
	case gateway.LimitUser:
		return codeUserRPM
	case gateway.LimitGroup, gateway.LimitOverride:
		return codeGroupRPM
	}
	return codeRouteRPM
}

// setRateLimitHeaders writes RateLimit-Policy / RateLimit
// (draft-ietf-httpapi-ratelimit-headers-10) and the X-RateLimit-* trio.
func (h *Handler) setRateLimitHeaders(hdr http.Header, d *gateway.Decision) {
	limits := d.Limits()
	if len(limits) == 0 || h.RateLimitHeaders == "off" {
		return
	}
	// This runs on every admitted request: build every value with strconv
	// appends into one buffer, make one string of it and one slice of
	// values, and assign the canonical keys directly (the same result as
	// fmt's %q / %d and Header.Set, at a fraction of the cost).
	reset := d.ResetSeconds()
	var stack [256]byte // enough for a few counters; append moves on if not
	buf := stack[:0]
	var names [5]string // header i's value ends at ends[i] in buf
	var ends [5]int
	n := 0
	add := func(name string) {
		names[n], ends[n] = name, len(buf)
		n++
	}
	if h.RateLimitHeaders != "legacy" {
		for i := range limits {
			buf = appendListItem(buf, i, &limits[i])
			buf = append(buf, ";q="...)
			buf = strconv.AppendInt(buf, limits[i].Limit, 10)
			buf = append(buf, ";w=60"...)
		}
		add(hdrRateLimitPolicy)
		for i := range limits {
			buf = appendListItem(buf, i, &limits[i])
			buf = append(buf, ";r="...)
			buf = strconv.AppendInt(buf, limits[i].Remaining, 10)
			buf = append(buf, ";t="...)
			buf = strconv.AppendInt(buf, reset, 10)
		}
		add(hdrRateLimit)
	}
	if h.RateLimitHeaders != "ietf" {
		l := &limits[d.Strictest()]
		buf = strconv.AppendInt(buf, l.Limit, 10)
		add(hdrXRateLimitLimit)
		buf = strconv.AppendInt(buf, l.Remaining, 10)
		add(hdrXRateLimitRemaining)
		buf = strconv.AppendInt(buf, reset, 10)
		add(hdrXRateLimitReset)
	}
	all := string(buf)
	values := make([]string, n)
	start := 0
	for i := range n {
		values[i] = all[start:ends[i]]
		start = ends[i]
		hdr[names[i]] = values[i : i+1 : i+1]
	}
}

// appendListItem starts item i of a RateLimit-Policy or RateLimit list:
// the separator after the previous item, then the limit's quoted name; the
// caller appends the item's parameters. The names need no escaping —
// "user", "group" and zones, which are letters, digits, '.', '_' and '-'
// (gateway.CheckZone) — so they are quoted as they are: strconv.AppendQuote
// took a third of this function's time looking for runes to escape.
func appendListItem(buf []byte, i int, l *gateway.Limit) []byte {
	if i > 0 {
		buf = append(buf, ", "...)
	}
	buf = append(buf, '"')
	buf = append(buf, policyName(l)...)
	return append(buf, '"')
}

// The rate-limit header names in canonical form (what Header.Set uses).
var (
	hdrRateLimitPolicy     = http.CanonicalHeaderKey("RateLimit-Policy")
	hdrRateLimit           = http.CanonicalHeaderKey("RateLimit")
	hdrXRateLimitLimit     = http.CanonicalHeaderKey("X-RateLimit-Limit")
	hdrXRateLimitRemaining = http.CanonicalHeaderKey("X-RateLimit-Remaining")
	hdrXRateLimitReset     = http.CanonicalHeaderKey("X-RateLimit-Reset")
)

// refuse answers 429 for the limit that refused the request. A full
// concurrency cap is retried after 1 s, as a place may free up at any
// moment; the rate-limit headers describe the per-minute limits only
// (a cap is no quota per window), as on any answer.
func (h *Handler) refuse(w http.ResponseWriter, s *snapshot.Snapshot, d *gateway.Decision) error {
	l, _ := d.Refusal()
	code := refusalCode(l.Scope)
	reason := code
	if d.Local {
		reason += "_local"
	}
	h.app.metrics.decisions.WithLabelValues("refused", reason).Inc()
	var retry int64 = 1
	var message string
	if l.Scope.Concurrency() {
		message = concurrencyMessage(l)
	} else {
		retry = d.ResetSeconds()
		message = limitMessage(s, l, retry)
	}
	hdr := w.Header()
	hdr.Set("Retry-After", strconv.FormatInt(retry, 10))
	h.setRateLimitHeaders(hdr, d)
	return h.writeError(w, &apiError{status: http.StatusTooManyRequests, code: code, message: message})
}

// concurrencyMessage is limitMessage for a full concurrency cap.
func concurrencyMessage(l gateway.Limit) string {
	var which string
	switch l.Scope {
	case gateway.LimitConcurrencyUser:
		which = fmt.Sprintf("the user's limit of %d concurrent requests", l.Limit)
	case gateway.LimitRouteConcurrencyUser:
		which = fmt.Sprintf("the route limit %q of %d concurrent requests per user", l.Zone, l.Limit)
	default:
		which = fmt.Sprintf("the route limit %q of %d concurrent requests per API key", l.Zone, l.Limit)
	}
	return fmt.Sprintf("Concurrency limit reached at the API gateway (not the upstream provider): %s. Retry after 1 second, or when one of these requests has ended.", which)
}

// limitMessage says plainly that the gateway refused, which limit, its
// value and when to retry: clients confuse gateway 429s with upstream ones.
func limitMessage(s *snapshot.Snapshot, l gateway.Limit, reset int64) string {
	var which string
	switch l.Scope {
	case gateway.LimitUser:
		which = fmt.Sprintf("the user's limit of %d requests per minute", l.Limit)
	case gateway.LimitGroup, gateway.LimitOverride:
		name := ""
		if s.Group != nil {
			name = fmt.Sprintf(" %q", s.Group.Name)
		}
		which = fmt.Sprintf("the group%s limit of %d requests per minute for this user", name, l.Limit)
	default:
		per := "user"
		if l.Scope == gateway.LimitRouteKey {
			per = "API key"
		}
		which = fmt.Sprintf("the route limit %q of %d requests per minute per %s", l.Zone, l.Limit, per)
	}
	return fmt.Sprintf("Rate limit reached at the API gateway (not the upstream provider): %s. Retry after %d seconds.", which, reset)
}
