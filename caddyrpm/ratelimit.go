package caddyrpm

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// resetSeconds turns the time left in the window into whole seconds, 1..60,
// rounding up so a client that waits that long lands in the next window.
func resetSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(1, min(s, 60))
}

// strictest picks the counter with the fewest requests left (the smallest
// limit on ties); it is what the X-RateLimit headers describe.
func strictest(counters []limiter.Counter, counts []int64) int {
	best := 0
	for i := range counters {
		ri, rb := remaining(counters[i], counts, i), remaining(counters[best], counts, best)
		if ri < rb || (ri == rb && counters[i].Limit < counters[best].Limit) {
			best = i
		}
	}
	return best
}

func remaining(c limiter.Counter, counts []int64, i int) int64 {
	if i >= len(counts) {
		return c.Limit
	}
	return max(0, c.Limit-counts[i])
}

// setRateLimitHeaders writes RateLimit-Policy / RateLimit
// (draft-ietf-httpapi-ratelimit-headers-10) and the X-RateLimit-* trio.
func (h *Handler) setRateLimitHeaders(hdr http.Header, counters []limiter.Counter, res limiter.Result) {
	if len(counters) == 0 || h.RateLimitHeaders == "off" {
		return
	}
	// This runs on every admitted request: build every value with strconv
	// appends into one buffer, make one string of it and one slice of
	// values, and assign the canonical keys directly (the same result as
	// fmt's %q / %d and Header.Set, at a fraction of the cost).
	reset := resetSeconds(res.ResetIn)
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
		for i, c := range counters {
			if i > 0 {
				buf = append(buf, ", "...)
			}
			buf = strconv.AppendQuote(buf, c.Policy)
			buf = append(buf, ";q="...)
			buf = strconv.AppendInt(buf, c.Limit, 10)
			buf = append(buf, ";w=60"...)
		}
		add(hdrRateLimitPolicy)
		for i, c := range counters {
			if i > 0 {
				buf = append(buf, ", "...)
			}
			buf = strconv.AppendQuote(buf, c.Policy)
			buf = append(buf, ";r="...)
			buf = strconv.AppendInt(buf, remaining(c, res.Counts, i), 10)
			buf = append(buf, ";t="...)
			buf = strconv.AppendInt(buf, reset, 10)
		}
		add(hdrRateLimit)
	}
	if h.RateLimitHeaders != "ietf" {
		i := strictest(counters, res.Counts)
		buf = strconv.AppendInt(buf, counters[i].Limit, 10)
		add(hdrXRateLimitLimit)
		buf = strconv.AppendInt(buf, remaining(counters[i], res.Counts, i), 10)
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

// The rate-limit header names in canonical form (what Header.Set uses).
var (
	hdrRateLimitPolicy     = http.CanonicalHeaderKey("RateLimit-Policy")
	hdrRateLimit           = http.CanonicalHeaderKey("RateLimit")
	hdrXRateLimitLimit     = http.CanonicalHeaderKey("X-RateLimit-Limit")
	hdrXRateLimitRemaining = http.CanonicalHeaderKey("X-RateLimit-Remaining")
	hdrXRateLimitReset     = http.CanonicalHeaderKey("X-RateLimit-Reset")
)

// refuse answers 429 for the counter that refused the request.
func (h *Handler) refuse(w http.ResponseWriter, s *snapshot.Snapshot, counters []limiter.Counter, res limiter.Result) error {
	c := counters[res.Denied]
	reason := c.Code
	if res.Local {
		reason += "_local"
	}
	h.app.metrics.decisions.WithLabelValues("refused", reason).Inc()
	reset := resetSeconds(res.ResetIn)
	hdr := w.Header()
	hdr.Set("Retry-After", strconv.FormatInt(reset, 10))
	h.setRateLimitHeaders(hdr, counters, res)
	return h.writeError(w, &apiError{
		status:  http.StatusTooManyRequests,
		code:    c.Code,
		message: limitMessage(s, c, h.routeScope(counters, res.Denied), reset),
	})
}

// limitMessage says plainly that the gateway refused, which limit, its
// value and when to retry: clients confuse gateway 429s with upstream ones.
func limitMessage(s *snapshot.Snapshot, c limiter.Counter, routeScope string, reset int64) string {
	var which string
	switch c.Code {
	case codeUserRPM:
		which = fmt.Sprintf("the user's limit of %d requests per minute", c.Limit)
	case codeGroupRPM:
		name := ""
		if s.Group != nil {
			name = fmt.Sprintf(" %q", s.Group.Name)
		}
		which = fmt.Sprintf("the group%s limit of %d requests per minute for this user", name, c.Limit)
	default:
		per := "user"
		if routeScope == "key" {
			per = "API key"
		}
		which = fmt.Sprintf("the route limit %q of %d requests per minute per %s", c.Policy, c.Limit, per)
	}
	return fmt.Sprintf("Rate limit reached at the API gateway (not the upstream provider): %s. Retry after %d seconds.", which, reset)
}

// routeScope is the scope of counter i if it is one of the handler's route
// limits (they come last, in configuration order), else "".
func (h *Handler) routeScope(counters []limiter.Counter, i int) string {
	first := len(counters) - len(h.Limits)
	if i < first || i >= len(counters) {
		return ""
	}
	return h.Limits[i-first].Scope
}
