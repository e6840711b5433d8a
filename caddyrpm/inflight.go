package caddyrpm

import (
	"sync"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// liveLimiters are the limiters of this process that may hold leases: one
// per limiter configuration in use (they are shared across reloads, see
// provisionLimiter), added when created and removed when destroyed. The
// caddy_rpm_in_flight gauge is the sum of their leases, so it counts every
// request of this process holding a concurrency slot, whichever
// configuration admitted it.
var liveLimiters = struct {
	mu  sync.Mutex
	set map[limiter.Acquirer]struct{}
}{set: map[limiter.Acquirer]struct{}{}}

// trackInFlight adds l to the limiters the in-flight gauge sums and
// returns the function that removes it.
func trackInFlight(l limiter.Acquirer) (untrack func()) {
	liveLimiters.mu.Lock()
	liveLimiters.set[l] = struct{}{}
	liveLimiters.mu.Unlock()
	return func() {
		liveLimiters.mu.Lock()
		delete(liveLimiters.set, l)
		liveLimiters.mu.Unlock()
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
