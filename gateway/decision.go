package gateway

import (
	"context"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// Outcome is what a rate-limit check decided.
type Outcome uint8

// The outcomes of a check.
const (
	// Admitted: every limit had room and was counted (or none applies).
	Admitted Outcome = iota
	// AdmittedFailOpen: the limiter could not be asked and the gateway
	// fails open, so the request passes uncounted.
	AdmittedFailOpen
	// Refused: a limit is used up; Decision.Refusing names it.
	Refused
	// Unavailable: the limiter could not be asked and the gateway fails
	// closed.
	Unavailable
	// Abandoned: the caller's context ended before the limiter answered
	// (a client that went away). Nobody is left to admit, and it is no
	// limiter failure.
	Abandoned
)

// Limit is one limit a request was checked against.
type Limit struct {
	// Scope says what the limit caps.
	Scope LimitScope
	// Zone is the route zone of a route limit, "" otherwise.
	Zone string
	// Limit is the number of requests per minute.
	Limit int64
	// Remaining is how many more requests the limit admits in this window;
	// the limit itself when the limiter could not be asked.
	Remaining int64
}

// Decision is the result of Check: what the HTTP layer renders as headers
// and error bodies. It is a value, so deciding allocates nothing beyond
// what the limiter does.
type Decision struct {
	// Outcome is what was decided.
	Outcome Outcome
	// Refusing is the index in Limits of the limit that refused the
	// request, -1 if none. With several full limits it is the first.
	Refusing int
	// Local reports a refusal decided by the local deny cache, without
	// asking Redis.
	Local bool
	// ResetIn is the time left in the current window.
	ResetIn time.Duration
	// Err is the limiter's error for AdmittedFailOpen and Unavailable.
	Err error

	limits [MaxCounters]Limit
	n      int
}

// Limits returns the limits the request was checked against, in a fixed
// order: user, (user, group) layer, then the route's limits.
func (d *Decision) Limits() []Limit { return d.limits[:d.n] }

// Refusal returns the limit that refused the request; ok is false unless
// the outcome is Refused.
func (d *Decision) Refusal() (l Limit, ok bool) {
	if d.Outcome != Refused || d.Refusing < 0 || d.Refusing >= d.n {
		return Limit{}, false
	}
	return d.limits[d.Refusing], true
}

// Strictest returns the index of the limit with the fewest requests left,
// the smallest limit on ties (what a single-limit header should describe);
// -1 without limits.
func (d *Decision) Strictest() int {
	if d.n == 0 {
		return -1
	}
	best := 0
	for i := 1; i < d.n; i++ {
		li, lb := d.limits[i], d.limits[best]
		if li.Remaining < lb.Remaining || (li.Remaining == lb.Remaining && li.Limit < lb.Limit) {
			best = i
		}
	}
	return best
}

// ResetSeconds is ResetIn in whole seconds (see ResetSeconds).
func (d *Decision) ResetSeconds() int64 { return ResetSeconds(d.ResetIn) }

// ResetSeconds turns the time left in a window into whole seconds, 1..60,
// rounding up so a client that waits that long lands in the next window.
func ResetSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(1, min(s, 60))
}

// Check counts a request of the key whose snapshot is s through a route
// with the given limits (nil for none): it admits the request if every
// limit that applies has room, and then counts it against all of them.
func (g *Gateway) Check(ctx context.Context, s *snapshot.Snapshot, route []RouteLimit) Decision {
	d := Decision{Refusing: -1}
	counters := g.policy.counters(s, route, &d)
	if len(counters) == 0 {
		return d
	}
	res, err := g.limiter.Check(ctx, counters)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			d.Outcome = Abandoned
		case g.failClosed:
			d.Outcome = Unavailable
		default:
			d.Outcome = AdmittedFailOpen
		}
		d.Err = err
		return d
	}
	d.ResetIn = res.ResetIn
	for i := range min(d.n, len(res.Counts)) {
		d.limits[i].Remaining = max(0, d.limits[i].Limit-res.Counts[i])
	}
	if !res.Allowed {
		d.Outcome, d.Refusing, d.Local = Refused, res.Denied, res.Local
	}
	return d
}
