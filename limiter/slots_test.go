package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// slotBackend is a limiter that takes slots, with readers that do not go
// through it.
type slotBackend struct {
	acq  Acquirer
	keys Keys
	// held reads how many live places a set holds.
	held func(t *testing.T, key string) int64
	// count reads a counter's current-window count.
	count func(t *testing.T, key string) int64
	// wait makes sure the test's requests fall in one window.
	wait func(t *testing.T)
}

func localSlotBackend(t *testing.T) slotBackend {
	l := NewLocal(nil)
	return slotBackend{
		acq:  l,
		keys: Keys{Prefix: "local:"},
		held: func(t *testing.T, key string) int64 {
			held, _ := l.PeekSlots(context.Background(), []string{key})
			return held[0]
		},
		count: func(t *testing.T, key string) int64 {
			counts, _, _ := l.Peek(context.Background(), []string{key})
			return counts[0]
		},
		wait: func(t *testing.T) { redistest.WaitForLocalWindow(t, minRemaining) },
	}
}

// heldIs returns a condition: the set holds want places.
func (b slotBackend) heldIs(t *testing.T, key string, want int64) func() error {
	return func() error {
		if got := b.held(t, key); got != want {
			return fmt.Errorf("set %s holds %d, want %d", key, got, want)
		}
		return nil
	}
}

func acquire(t *testing.T, a Acquirer, cs []Counter, ss []Slot) (AcquireResult, *Lease) {
	t.Helper()
	res, lease, err := a.CheckAcquire(context.Background(), cs, ss)
	if err != nil {
		t.Fatalf("CheckAcquire: %v", err)
	}
	if res.Allowed != (lease != nil) {
		t.Fatalf("Allowed %v with lease %v", res.Allowed, lease)
	}
	return res, lease
}

// testSlotCap: 3 concurrent acquisitions with a cap of 2 admit 2; the
// refused one takes nothing; a release lets the next one in.
func testSlotCap(t *testing.T, b slotBackend) {
	b.wait(t)
	cs := []Counter{userCounter(b.keys, 1, 100)}
	ss := []Slot{{Key: b.keys.UserSlots(1), Limit: 2}}
	results := make([]AcquireResult, 3)
	leases := make([]*Lease, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			var err error
			if results[i], leases[i], err = b.acq.CheckAcquire(context.Background(), cs, ss); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var admitted []*Lease
	refused := 0
	for i, res := range results {
		if res.Allowed {
			admitted = append(admitted, leases[i])
			if res.DeniedSlot != -1 || res.Denied != -1 || res.InFlight[0] < 1 || res.InFlight[0] > 2 {
				t.Errorf("admitted: %+v", res)
			}
			continue
		}
		refused++
		if res.DeniedSlot != 0 || res.Denied != -1 || res.InFlight[0] != 2 || res.Counts[0] != 2 {
			t.Errorf("refused: %+v; want DeniedSlot 0, Denied -1, 2 in flight, count 2", res)
		}
	}
	if len(admitted) != 2 || refused != 1 {
		t.Fatalf("%d admitted, %d refused; want 2, 1", len(admitted), refused)
	}
	if got := b.count(t, cs[0].Key); got != 2 {
		t.Errorf("counter %d, want 2 (the refused request counts nothing)", got)
	}
	if got := b.held(t, ss[0].Key); got != 2 {
		t.Errorf("set holds %d, want 2", got)
	}
	if got := b.acq.InFlight(); got != 2 {
		t.Errorf("InFlight %d, want 2", got)
	}

	admitted[0].Release()
	if got := b.acq.InFlight(); got != 1 {
		t.Errorf("InFlight %d after a release, want 1", got)
	}
	testutil.WaitFor(t, 2*time.Second, b.heldIs(t, ss[0].Key, 1))
	res, lease := acquire(t, b.acq, cs, ss)
	if !res.Allowed || res.InFlight[0] != 2 {
		t.Fatalf("after a release: %+v; want admitted as the 2nd in flight", res)
	}
	lease.Release()
	admitted[1].Release()
	testutil.WaitFor(t, 2*time.Second, b.heldIs(t, ss[0].Key, 0))
	if got := b.acq.InFlight(); got != 0 {
		t.Errorf("InFlight %d after all releases, want 0", got)
	}
}

// testSlotsWithCounters: a full counter refuses without taking a place; a
// full set refuses without counting.
func testSlotsWithCounters(t *testing.T, b slotBackend) {
	b.wait(t)
	k := b.keys
	// User 1: the counter is full first.
	cs := []Counter{userCounter(k, 1, 1)}
	ss := []Slot{{Key: k.UserSlots(1), Limit: 5}}
	_, first := acquire(t, b.acq, cs, ss)
	res, _ := acquire(t, b.acq, cs, ss)
	if res.Allowed || res.Denied != 0 || res.DeniedSlot != -1 {
		t.Fatalf("full counter: %+v; want Denied 0, DeniedSlot -1", res)
	}
	if got := b.held(t, ss[0].Key); got != 1 {
		t.Errorf("set holds %d after a counter refusal, want 1", got)
	}
	first.Release()

	// User 2: the set is full first; the zone set comes second.
	cs = []Counter{userCounter(k, 2, 10), zoneKeyCounter(k, "img", 2, 5, 10)}
	ss = []Slot{{Key: k.ZoneKeySlots("img", 2, 5), Limit: 3}, {Key: k.UserSlots(2), Limit: 1}}
	_, held := acquire(t, b.acq, cs, ss)
	res, _ = acquire(t, b.acq, cs, ss)
	if res.Allowed || res.Denied != -1 || res.DeniedSlot != 1 || res.InFlight[0] != 1 || res.InFlight[1] != 1 {
		t.Fatalf("full set: %+v; want DeniedSlot 1, Denied -1, 1 and 1 in flight", res)
	}
	for _, c := range cs {
		if got := b.count(t, c.Key); got != 1 {
			t.Errorf("counter %s = %d after a slot refusal, want 1", c.Key, got)
		}
	}
	if got := b.held(t, ss[0].Key); got != 1 {
		t.Errorf("zone set holds %d, want 1 (the refused request took no place in it)", got)
	}

	// Both full: the counter is reported.
	cs = []Counter{userCounter(k, 2, 1)}
	res, _ = acquire(t, b.acq, cs, ss[1:])
	if res.Allowed || res.Denied != 0 || res.DeniedSlot != -1 {
		t.Fatalf("both full: %+v; want the counter reported", res)
	}
	held.Release()
}

// testDoubleRelease: a second Release frees nothing more.
func testDoubleRelease(t *testing.T, b slotBackend) {
	ss := []Slot{{Key: b.keys.UserSlots(3), Limit: 2}}
	_, l1 := acquire(t, b.acq, nil, ss)
	_, l2 := acquire(t, b.acq, nil, ss)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(l1.Release)
	}
	wg.Wait()
	testutil.WaitFor(t, 2*time.Second, b.heldIs(t, ss[0].Key, 1))
	if got := b.acq.InFlight(); got != 1 {
		t.Errorf("InFlight %d after 4 releases of one lease, want 1", got)
	}
	res, l3 := acquire(t, b.acq, nil, ss)
	if !res.Allowed {
		t.Fatalf("after a release: %+v, want admitted", res)
	}
	if res, _ := acquire(t, b.acq, nil, ss); res.Allowed {
		t.Fatalf("a third place: %+v; want refused (the double release freed one place)", res)
	}
	if got := b.held(t, ss[0].Key); got != 2 {
		t.Errorf("set holds %d, want 2", got)
	}
	l2.Release()
	l3.Release()
	var none *Lease
	none.Release() // a refused request's nil lease
}

// testSlotModel runs random acquisitions and releases from two instances
// against a model: an acquisition must be admitted while the places held
// (not released) plus those released but maybe not yet sent are below the
// cap, and refused while the places held alone reach it.
func testSlotModel(t *testing.T, b slotBackend, other Acquirer, settle func(t *testing.T)) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const limit = 3
	ss := []Slot{{Key: b.keys.UserSlots(4), Limit: limit}}
	insts := []Acquirer{b.acq, other}
	var held []*Lease
	pending := 0 // released since the last settle
	for step := range 300 {
		if len(held) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(held))
			held[i].Release()
			held = append(held[:i], held[i+1:]...)
			pending++
			continue
		}
		if rng.IntN(10) == 0 {
			settle(t)
			pending = 0
		}
		res, lease := acquire(t, insts[rng.IntN(2)], nil, ss)
		switch {
		case res.Allowed && len(held) >= limit:
			t.Fatalf("step %d: admitted with %d held, cap %d", step, len(held), limit)
		case !res.Allowed && len(held)+pending < limit:
			t.Fatalf("step %d: refused with %d held and %d releases pending, cap %d", step, len(held), pending, limit)
		}
		if lease != nil {
			held = append(held, lease)
		}
	}
	for _, l := range held {
		l.Release()
	}
}

// testSlotsConcurrent: goroutines of two instances acquire and release at
// random; the requests in flight never exceed the cap.
func testSlotsConcurrent(t *testing.T, b slotBackend, other Acquirer) {
	const limit = 4
	ss := []Slot{{Key: b.keys.UserSlots(5), Limit: limit}}
	var inFlight, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		a := []Acquirer{b.acq, other}[g%2]
		wg.Go(func() {
			for range 50 {
				res, lease, err := a.CheckAcquire(context.Background(), nil, ss)
				if err != nil {
					t.Error(err)
					return
				}
				if !res.Allowed {
					continue
				}
				admitted.Add(1)
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				inFlight.Add(-1) // before the release: the set may still count it
				lease.Release()
			}
		})
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Fatalf("%d requests in flight at once, cap %d", peak.Load(), limit)
	}
	if peak.Load() < 2 || admitted.Load() < limit {
		t.Fatalf("peak %d, %d admitted: the test did not overlap requests", peak.Load(), admitted.Load())
	}
	testutil.WaitFor(t, 2*time.Second, b.heldIs(t, ss[0].Key, 0))
}

func TestLocalSlots(t *testing.T) {
	t.Run("cap", func(t *testing.T) { testSlotCap(t, localSlotBackend(t)) })
	t.Run("with counters", func(t *testing.T) { testSlotsWithCounters(t, localSlotBackend(t)) })
	t.Run("double release", func(t *testing.T) { testDoubleRelease(t, localSlotBackend(t)) })
	t.Run("model", func(t *testing.T) {
		// One process: both "instances" are the same limiter, and a
		// release takes effect at once (nothing pending).
		b := localSlotBackend(t)
		testSlotModel(t, b, b.acq, func(*testing.T) {})
	})
	t.Run("concurrent", func(t *testing.T) {
		b := localSlotBackend(t)
		testSlotsConcurrent(t, b, b.acq)
	})
}

func TestLocalSlotsReleaseAtOnce(t *testing.T) {
	l := NewLocal(nil)
	ss := []Slot{{Key: "s", Limit: 1}}
	for range 3 {
		res, lease := acquire(t, l, nil, ss)
		if !res.Allowed {
			t.Fatalf("%+v: want admitted, the previous lease was released", res)
		}
		if res, _ := acquire(t, l, nil, ss); res.Allowed {
			t.Fatal("admitted past a cap of 1")
		}
		lease.Release()
	}
	if len(l.slots) != 0 {
		t.Fatalf("%d sets left after every release, want none", len(l.slots))
	}
}

func TestSlotKeysShareTheUsersHashSlot(t *testing.T) {
	k := Keys{Prefix: "rpm:"}
	for _, uid := range []int64{1, 7, 123456} {
		want := clusterSlot(k.User(uid))
		for _, key := range []string{k.UserSlots(uid), k.ZoneUserSlots("img", uid), k.ZoneKeySlots("img", uid, 9)} {
			if got := clusterSlot(key); got != want {
				t.Errorf("%s in hash slot %d, the user's counters in %d", key, got, want)
			}
		}
	}
	// Sets and counters never share a key.
	seen := map[string]bool{}
	for _, key := range []string{k.User(1), k.ZoneUser("z", 1), k.ZoneKey("z", 1, 2), k.UserSlots(1), k.ZoneUserSlots("z", 1), k.ZoneKeySlots("z", 1, 2)} {
		if seen[key] {
			t.Errorf("key %s used twice", key)
		}
		seen[key] = true
	}
}

// countingAcquirer counts the acquisitions that reach a Local.
type countingAcquirer struct {
	*Local
	acquires atomic.Int64
}

func (c *countingAcquirer) CheckAcquire(ctx context.Context, cs []Counter, ss []Slot) (AcquireResult, *Lease, error) {
	c.acquires.Add(1)
	return c.Local.CheckAcquire(ctx, cs, ss)
}

func TestDenyCacheSlots(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC))
	inner := &countingAcquirer{Local: NewLocal(clock.Now)}
	d := NewDenyCache(inner, clock.Now)
	k := Keys{Prefix: "deny:"}
	cs := []Counter{userCounter(k, 1, 1)}
	ss := []Slot{{Key: k.UserSlots(1), Limit: 1}}

	_, lease := acquire(t, d, cs, ss)
	// The set is full: refused by the backend, and not remembered.
	res, _ := acquire(t, d, []Counter{userCounter(k, 1, 5)}, ss)
	if res.Allowed || res.DeniedSlot != 0 || res.Local {
		t.Fatalf("full set: %+v", res)
	}
	lease.Release()
	res, lease = acquire(t, d, []Counter{userCounter(k, 1, 5)}, ss)
	if !res.Allowed {
		t.Fatalf("after the release: %+v; want admitted (a full set is not remembered)", res)
	}
	lease.Release()

	// The counter is full: remembered, then refused locally, taking nothing.
	if res, _ := acquire(t, d, cs, ss); res.Allowed || res.Denied != 0 || res.Local {
		t.Fatalf("full counter: %+v", res)
	}
	before := inner.acquires.Load()
	res, _ = acquire(t, d, cs, ss)
	if res.Allowed || !res.Local || res.Denied != 0 || res.DeniedSlot != -1 {
		t.Fatalf("remembered counter: %+v; want a local refusal", res)
	}
	if inner.acquires.Load() != before {
		t.Fatal("a remembered counter went to the backend")
	}
	if got := d.InFlight(); got != 0 {
		t.Fatalf("InFlight %d, want 0", got)
	}
}
