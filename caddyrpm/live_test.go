package caddyrpm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// TestInFlightSumsTheLiveLimiters: the gauge is the leases held by every
// live limiter, and a limiter removed (its configuration gone) no longer
// counts.
func TestInFlightSumsTheLiveLimiters(t *testing.T) {
	before := inFlight()
	a, b := limiter.NewLocal(time.Now), limiter.NewLocal(time.Now)
	untrackA, untrackB := trackLimiter(a, nil), trackLimiter(b, nil)
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

// TestReservationStatsOutliveTheirLimiter: the reservation counters sum
// the live limiters' stats, and a limiter removed after its close keeps
// its counts there, the units its close handed back included — once.
func TestReservationStatsOutliveTheirLimiter(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	redistest.WaitForWindow(t, rdb, 5*time.Second)
	r := limiter.NewRedis(rdb, limiter.WithReservations(time.Hour)) // no idle hand-back
	before := reservationStats()
	untrack := trackLimiter(r, r)
	t.Cleanup(func() { _ = r.Close(); untrack() }) // both do nothing the second time
	counters := []limiter.Counter{{Key: limiter.Keys{Prefix: prefix}.User(1), Limit: 100000, UserID: 1}}
	for round := 0; r.Reserved([]string{counters[0].Key})[0] == 0; round++ {
		if round == 50 {
			t.Fatal("never held reserved units")
		}
		err := testutil.Concurrently(8, 5, func() error {
			if res, err := r.Check(context.Background(), counters); err != nil || !res.Allowed {
				return fmt.Errorf("check: %+v %v", res, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Other limiters of the process may hand units back meanwhile, but
	// grants and local admissions need requests. A grant fetched ahead
	// may still come in, so the sum must catch up with the limiter.
	testutil.WaitFor(t, 2*time.Second, func() error {
		own, got := r.ReservationStats(), reservationStats()
		if got.Granted-before.Granted != own.Granted || got.Local-before.Local != own.Local {
			return fmt.Errorf("live sum moved by %+v, the limiter's stats are %+v", got, own)
		}
		return nil
	})
	_ = r.Close()
	untrack()
	untrack()
	closed := r.ReservationStats()
	if closed.HandedBack == 0 {
		t.Fatalf("closing with %d units reserved handed none back: %+v", r.Reserved([]string{counters[0].Key})[0], closed)
	}
	after := reservationStats()
	if after.Granted-before.Granted != closed.Granted || after.Local-before.Local != closed.Local ||
		after.HandedBack-before.HandedBack < closed.HandedBack {
		t.Fatalf("after removal the sum moved by granted %d, local %d, handed back %d; the limiter's stats are %+v",
			after.Granted-before.Granted, after.Local-before.Local, after.HandedBack-before.HandedBack, closed)
	}
}
