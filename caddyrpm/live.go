package caddyrpm

import (
	"sync"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// liveLimiters are the limiters of this process: one per limiter
// configuration in use (they are shared across reloads, see
// provisionLimiter), added when created and removed when destroyed, each
// with the Redis limiter under it (nil for the in-process one). The
// caddy_rpm_in_flight gauge is the sum of their leases, so it counts every
// request of this process holding a concurrency slot, whichever
// configuration admitted it. The reservation counters sum their
// reservation stats and those of the limiters already removed (retired),
// so that they never go down when a configuration goes away.
var liveLimiters = struct {
	mu      sync.Mutex
	set     map[limiter.Acquirer]*limiter.Redis
	retired limiter.ReservationStats
}{set: map[limiter.Acquirer]*limiter.Redis{}}

// trackLimiter adds l, over the Redis limiter r (nil for none), to the
// live limiters and returns the function that removes it. Call that once
// r is closed, so that the units its close handed back are counted.
func trackLimiter(l limiter.Acquirer, r *limiter.Redis) (untrack func()) {
	liveLimiters.mu.Lock()
	liveLimiters.set[l] = r
	liveLimiters.mu.Unlock()
	return func() {
		liveLimiters.mu.Lock()
		defer liveLimiters.mu.Unlock()
		if _, ok := liveLimiters.set[l]; !ok {
			return
		}
		delete(liveLimiters.set, l)
		if r != nil {
			addStats(&liveLimiters.retired, r.ReservationStats())
		}
	}
}

// inFlight is the number of leases the live limiters hold: requests of
// this process admitted under a concurrency cap and not yet over.
func inFlight() float64 {
	liveLimiters.mu.Lock()
	defer liveLimiters.mu.Unlock()
	var n int64
	for l := range liveLimiters.set {
		n += l.InFlight()
	}
	return float64(n)
}

// reservationStats is what the reservations of every limiter of this
// process did, those removed included.
func reservationStats() limiter.ReservationStats {
	liveLimiters.mu.Lock()
	defer liveLimiters.mu.Unlock()
	st := liveLimiters.retired
	for _, r := range liveLimiters.set {
		if r != nil {
			addStats(&st, r.ReservationStats())
		}
	}
	return st
}

// addStats adds b's counts to a's.
func addStats(a *limiter.ReservationStats, b limiter.ReservationStats) {
	a.Granted += b.Granted
	a.Local += b.Local
	a.HandedBack += b.HandedBack
	a.Unanswered += b.Unanswered
	a.HandBackErrors += b.HandBackErrors
}
