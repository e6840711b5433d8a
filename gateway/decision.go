package gateway

import (
	"context"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// Outcome is what a rate-limit check decided.
type Outcome uint8

// The outcomes of a check.
const (
	// Admitted: every limit had room and was counted, and a place was
	// taken under every concurrency cap (or none applies).
	Admitted Outcome = iota
	// AdmittedFailOpen: the limiter could not be asked and the gateway
	// fails open, so the request passes uncounted.
	AdmittedFailOpen
	// Refused: a limit is used up or a concurrency cap is full;
	// Decision.Refusal names it.
	Refused
	// Unavailable: the limiter could not be asked and the gateway fails
	// closed.
	Unavailable
	// Abandoned: the caller's context ended before the limiter answered
	// (a client that went away). Nobody is left to admit, and it is no
	// limiter failure.
	Abandoned
	// ShadowRefused: a limit is used up (or a concurrency cap full), but
	// the route only observes its limits (shadow mode), so the request is
	// admitted. Like a refusal it is counted in none of its limits and
	// holds no place under any cap; Decision.Refusal names the limit that
	// would have refused it.
	ShadowRefused
)

// Limit is one limit a request was checked against: a per-minute limit
// or a concurrency cap (Scope.Concurrency).
type Limit struct {
	// Scope says what the limit caps.
	Scope LimitScope
	// Zone is the route zone of a route limit, "" otherwise.
	Zone string
	// Limit is the number of requests per minute, or for a concurrency cap
	// the number of requests in flight at once.
	Limit int64
	// Remaining is how many more requests the limit admits in this window
	// (a cap: at this moment); the limit itself when the limiter could not
	// be asked.
	Remaining int64
	// InFlight is, for a concurrency cap, the number of requests its set
	// holds: with this one when admitted, without it when refused; 0 when
	// the limiter did not say (it could not be asked, or a counter was
	// refused by the local deny cache).
	InFlight int64
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
	// RefusingCap is the index in Caps of the concurrency cap that refused
	// the request, -1 if none. A full limit is reported before a full cap
	// (Refusing), so at most one of the two is set.
	RefusingCap int
	// Lease holds the request's places under the concurrency caps when it
	// was admitted with caps that apply; nil otherwise (a shadow-refused or
	// fail-open request holds none). Whoever hands the request on must
	// Release it once, when the response is over; Release on nil does
	// nothing.
	Lease *limiter.Lease
	// Local reports a decision made without asking the limiter's backend:
	// a refusal by the local deny cache, or an admission from units this
	// instance holds reserved.
	Local bool
	// ResetIn is the time left in the current window.
	ResetIn time.Duration
	// Err is the limiter's error for AdmittedFailOpen and Unavailable.
	Err error

	limits [MaxCounters]Limit
	n      int
	caps   [MaxCaps]Limit
	nc     int
}

// Limits returns the per-minute limits the request was checked against,
// in a fixed order: user, (user, group) layer, then the route's limits.
func (d *Decision) Limits() []Limit { return d.limits[:d.n] }

// Caps returns the concurrency caps the request was checked against, in a
// fixed order: the user's, then the route's per user and per key.
func (d *Decision) Caps() []Limit { return d.caps[:d.nc] }

// Refusal returns the limit or cap that refused the request (or, in
// shadow mode, would have); ok is false unless the outcome is Refused or
// ShadowRefused.
func (d *Decision) Refusal() (l Limit, ok bool) {
	if d.Outcome != Refused && d.Outcome != ShadowRefused {
		return Limit{}, false
	}
	switch {
	case d.Refusing >= 0 && d.Refusing < d.n:
		return d.limits[d.Refusing], true
	case d.RefusingCap >= 0 && d.RefusingCap < d.nc:
		return d.caps[d.RefusingCap], true
	}
	return Limit{}, false
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

// Shadow applies shadow mode to the decision: a refusal by a limit or a
// concurrency cap becomes ShadowRefused, an admission. Nothing else
// changes: authentication refusals are decided before any check and are
// never shadowed, and a limiter that cannot be asked fails open or closed
// as configured, since shadow mode observes limits, not Redis. The refused
// check took nothing, so the counters keep what enforcement would have
// admitted and turning shadow mode off later starts from true counts; a
// request admitted past a full cap holds no place under any cap, so the
// caps' sets keep holding only requests enforcement would have admitted.
func (d *Decision) Shadow() {
	if d.Outcome == Refused {
		d.Outcome = ShadowRefused
	}
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
// limit that applies has room and every concurrency cap has a free place,
// and then counts it against all limits and takes a place under every cap
// (Decision.Lease), in one atomic step. Without caps it is a plain count.
func (g *Gateway) Check(ctx context.Context, s *snapshot.Snapshot, route []RouteLimit) Decision {
	d := Decision{Refusing: -1, RefusingCap: -1}
	counters := g.policy.counters(s, route, &d)
	slots := g.policy.slots(s, route, &d)
	if len(slots) == 0 {
		if len(counters) > 0 {
			res, err := g.limiter.Check(ctx, counters)
			g.decide(ctx, &d, &res, err)
		}
		return d
	}
	res, lease, err := g.limiter.CheckAcquire(ctx, counters, slots)
	if !g.decide(ctx, &d, &res.Result, err) {
		return d
	}
	for i := range min(d.nc, len(res.InFlight)) {
		c := &d.caps[i]
		c.InFlight = res.InFlight[i]
		c.Remaining = max(0, c.Limit-c.InFlight)
	}
	switch {
	case res.Allowed:
		d.Lease = lease
	case res.Denied < 0 && res.DeniedSlot >= 0:
		d.Refusing, d.RefusingCap = -1, res.DeniedSlot
	}
	return d
}

// decide records the limiter's answer (or failure) on the per-minute
// limits in d and reports whether the limiter answered.
func (g *Gateway) decide(ctx context.Context, d *Decision, res *limiter.Result, err error) bool {
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
		return false
	}
	d.ResetIn, d.Local = res.ResetIn, res.Local
	for i := range min(d.n, len(res.Counts)) {
		d.limits[i].Remaining = max(0, d.limits[i].Limit-res.Counts[i])
	}
	if !res.Allowed {
		d.Outcome, d.Refusing = Refused, res.Denied
	}
	return true
}
