package caddyrpm

import (
	"context"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// TestInFlightSumsTheLiveLimiters: the gauge is the leases held by every
// live limiter, and a limiter removed (its configuration gone) no longer
// counts.
func TestInFlightSumsTheLiveLimiters(t *testing.T) {
	before := inFlight()
	a, b := limiter.NewLocal(time.Now), limiter.NewLocal(time.Now)
	untrackA, untrackB := trackInFlight(a), trackInFlight(b)
	defer untrackB()
	take := func(l *limiter.Local, key string) *limiter.Lease {
		t.Helper()
		res, lease, err := l.CheckAcquire(context.Background(), nil, []limiter.Slot{{Key: key, Limit: 10}})
		if err != nil || !res.Allowed {
			t.Fatalf("acquire: %+v, %v", res, err)
		}
		return lease
	}
	l1, l2 := take(a, "s1"), take(a, "s2")
	l3 := take(b, "s1")
	defer l3.Release()
	if got := inFlight() - before; got != 3 {
		t.Fatalf("gauge rose by %v with 3 leases held, want 3", got)
	}
	l1.Release()
	if got := inFlight() - before; got != 2 {
		t.Errorf("gauge %v above the start after a release, want 2", got)
	}
	untrackA()
	if got := inFlight() - before; got != 1 {
		t.Errorf("gauge %v above the start after a limiter went away, want 1 (b's lease)", got)
	}
	l2.Release()
}
