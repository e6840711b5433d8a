package limiter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingLimiter counts calls to its inner limiter and can fail.
type countingLimiter struct {
	Limiter
	checks, forgets atomic.Int64
	fail            atomic.Bool
}

func (c *countingLimiter) Check(ctx context.Context, cs []Counter) (Result, error) {
	c.checks.Add(1)
	if c.fail.Load() {
		return Result{Denied: -1}, ErrUnavailable
	}
	return c.Limiter.Check(ctx, cs)
}

func (c *countingLimiter) Forget(u, g int64) {
	c.forgets.Add(1)
	c.Limiter.Forget(u, g)
}

func newDenyOnLocal(at time.Time, opts ...DenyOption) (*DenyCache, *countingLimiter, *fakeClock) {
	clock := newFakeClock(at)
	inner := &countingLimiter{Limiter: NewLocal(clock.Now)}
	return NewDenyCache(inner, clock.Now, opts...), inner, clock
}

// fill admits limit requests and has the backend refuse one.
func fill(t *testing.T, d *DenyCache, cs []Counter, n int) Result {
	t.Helper()
	for range n {
		if res, err := d.Check(context.Background(), cs); err != nil || !res.Allowed {
			t.Fatalf("fill: %+v, %v", res, err)
		}
	}
	res, err := d.Check(context.Background(), cs)
	if err != nil || res.Allowed || res.Local {
		t.Fatalf("backend refusal: %+v, %v", res, err)
	}
	return res
}

func TestDenyCacheRefusesLocally(t *testing.T) {
	d, inner, clock := newDenyOnLocal(minuteStart.Add(20 * time.Second))
	k := Keys{Prefix: "deny:"}
	cs := []Counter{groupCounter(k, 1, 1, 5), userCounter(k, 1, 3)}
	fill(t, d, cs, 3)
	if d.Len() != 1 {
		t.Fatalf("Len %d, want 1 (only the full counter)", d.Len())
	}
	inner.checks.Store(0)
	clock.Add(10 * time.Second)
	res, err := d.Check(context.Background(), cs)
	if err != nil || res.Allowed || !res.Local || res.Denied != 1 {
		t.Fatalf("local refusal: %+v, %v", res, err)
	}
	if res.Counts[0] != 3 || res.Counts[1] != 3 || res.ResetIn != 30*time.Second {
		t.Fatalf("local refusal counts %v, ResetIn %v; want [3 3], 30s", res.Counts, res.ResetIn)
	}
	// Any request carrying the full counter is refused, other groups too.
	other := []Counter{groupCounter(k, 1, 2, 5), userCounter(k, 1, 3)}
	if res, _ := d.Check(context.Background(), other); !res.Local || res.Denied != 1 || res.Counts[0] != 0 {
		t.Fatalf("other group: %+v", res)
	}
	// A lower limit is refused locally too.
	if res, _ := d.Check(context.Background(), []Counter{userCounter(k, 1, 2)}); !res.Local {
		t.Fatalf("lowered limit: %+v, want a local refusal", res)
	}
	if n := inner.checks.Load(); n != 0 {
		t.Fatalf("%d backend calls for locally refused requests, want 0", n)
	}
	// Requests without it reach the backend.
	if res, _ := d.Check(context.Background(), []Counter{userCounter(k, 2, 3)}); !res.Allowed || inner.checks.Load() != 1 {
		t.Fatalf("another user: %+v, backend calls %d", res, inner.checks.Load())
	}

	// At the end of the window the entry expires and the backend decides.
	clock.Add(30 * time.Second)
	inner.checks.Store(0)
	if res, _ := d.Check(context.Background(), cs); !res.Allowed || inner.checks.Load() != 1 {
		t.Fatalf("next window: %+v, backend calls %d", res, inner.checks.Load())
	}
	if d.Len() != 0 {
		t.Fatalf("Len %d after expiry, want 0", d.Len())
	}
}

func TestDenyCacheRaisedLimitGoesToBackend(t *testing.T) {
	d, inner, _ := newDenyOnLocal(minuteStart)
	k := Keys{Prefix: "deny:"}
	fill(t, d, []Counter{userCounter(k, 1, 2)}, 2)
	inner.checks.Store(0)
	res, err := d.Check(context.Background(), []Counter{userCounter(k, 1, 3)})
	if err != nil || !res.Allowed || res.Local || inner.checks.Load() != 1 {
		t.Fatalf("raised limit: %+v, %v, backend calls %d; want admitted by the backend", res, err, inner.checks.Load())
	}
	// Full again at the new limit: remembered with the new count.
	res, _ = d.Check(context.Background(), []Counter{userCounter(k, 1, 3)})
	if res.Allowed || res.Local {
		t.Fatalf("%+v, want a backend refusal", res)
	}
	if res, _ := d.Check(context.Background(), []Counter{userCounter(k, 1, 3)}); !res.Local || res.Counts[0] != 3 {
		t.Fatalf("%+v, want a local refusal at count 3", res)
	}
}

func TestDenyCacheForget(t *testing.T) {
	d, inner, _ := newDenyOnLocal(minuteStart)
	k := Keys{Prefix: "deny:"}
	u1g1 := []Counter{groupCounter(k, 1, 1, 1)}
	u2g1 := []Counter{groupCounter(k, 2, 1, 1)}
	u3 := []Counter{userCounter(k, 3, 1)}
	u4g2 := []Counter{groupCounter(k, 4, 2, 1)}
	for _, cs := range [][]Counter{u1g1, u2g1, u3, u4g2} {
		fill(t, d, cs, 1)
	}
	if d.Len() != 4 {
		t.Fatalf("Len %d, want 4", d.Len())
	}
	local := func(cs []Counter) bool {
		res, _ := d.Check(context.Background(), cs)
		return res.Local
	}

	d.Forget(3, 0)
	if d.Len() != 3 || local(u3) || !local(u1g1) {
		t.Fatalf("after Forget(user 3): Len %d", d.Len())
	}
	// The backend refused u3 again: remembered again.
	if !local(u3) {
		t.Fatal("u3 not remembered after the backend refused it again")
	}
	d.Forget(0, 1)
	if d.Len() != 2 || local(u1g1) || local(u2g1) || !local(u4g2) {
		t.Fatalf("after Forget(group 1): Len %d", d.Len())
	}
	d.Forget(0, 0)
	if d.Len() != 0 {
		t.Fatalf("after Forget(0, 0): Len %d", d.Len())
	}
	if inner.forgets.Load() != 3 {
		t.Fatalf("inner Forget called %d times, want 3", inner.forgets.Load())
	}
}

func TestDenyCacheBoundedAndErrors(t *testing.T) {
	d, inner, _ := newDenyOnLocal(minuteStart, WithMaxEntries(3))
	k := Keys{Prefix: "deny:"}
	for uid := int64(1); uid <= 10; uid++ {
		fill(t, d, []Counter{userCounter(k, uid, 1)}, 1)
		if d.Len() > 3 {
			t.Fatalf("Len %d above the bound 3", d.Len())
		}
	}
	if res, _ := d.Check(context.Background(), []Counter{userCounter(k, 10, 1)}); !res.Local {
		t.Fatal("the newest entry was evicted")
	}
	d.Forget(0, 0)
	inner.fail.Store(true)
	if _, err := d.Check(context.Background(), []Counter{userCounter(k, 1, 1)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
	if d.Len() != 0 {
		t.Fatal("an error was remembered as a refusal")
	}
	inner.checks.Store(0)
	if res, err := d.Check(context.Background(), nil); err != nil || !res.Allowed || inner.checks.Load() != 0 {
		t.Fatalf("no counters: %+v, %v, backend calls %d", res, err, inner.checks.Load())
	}
}

func TestDenyCacheConcurrent(t *testing.T) {
	d := NewDenyCache(NewLocal(nil), nil, WithMaxEntries(8))
	k := Keys{Prefix: "deny:"}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				uid := int64(i % 20)
				cs := []Counter{userCounter(k, uid, 10), groupCounter(k, uid, int64(g%2), 1000)}
				if res, _ := d.Check(context.Background(), cs); res.Allowed {
					admitted.Add(1)
				}
				if i%97 == 0 {
					d.Forget(uid, 0)
				}
			}
		})
	}
	wg.Wait()
	// Minute-boundary safe: each of 20 users admits 10 per window, and the
	// test spans at most two windows.
	if n := admitted.Load(); n < 200 || n > 400 {
		t.Fatalf("admitted %d, want 200 (or up to 400 across a minute boundary)", n)
	}
}
