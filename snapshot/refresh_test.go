package snapshot

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// Keys that fall due one read at a time, as under uniform traffic over
// many keys, are reloaded together: 40 due keys read 5 ms apart take about
// one L2 round trip per refreshGather of reads (3 in ≈ 200 ms), not 40, and
// every one of them is reloaded.
func TestCacheGathersTricklingReloads(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	const keys = 40
	putL2(t, rdb, prefix, keys, func(i int) *Snapshot { return activeSnapshot(int64(i + 1)) })
	var l2Hits atomic.Int64
	c := NewCache(testConfig(prefix), rdb, (&countingLoader{}).load, CacheHooks{Hit: func(layer string) {
		if layer == "l2" {
			l2Hits.Add(1)
		}
	}})
	clk := &fakeClock{}
	useClock(c, clk)
	get := func(i int) {
		t.Helper()
		if s, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil || s.UserID != int64(i+1) {
			t.Fatalf("key %d: %+v, %v", i, s, err)
		}
	}
	for i := range keys {
		get(i) // L1 miss, L2 hit
	}
	trips := &slowRoundTrips{}
	rdb.AddHook(trips)
	clk.advance(31 * time.Second) // past half of the minute's TTL: due
	start := time.Now()
	for i := range keys {
		get(i) // an L1 hit that queues its key
		time.Sleep(5 * time.Millisecond)
	}
	reads := time.Since(start)
	awaitRefreshes(t, c)
	if n := l2Hits.Load(); n != 2*keys {
		t.Fatalf("%d L2 hits, want %d: every key once at its miss and once reloaded", n, 2*keys)
	}
	// Without gathering each key would take a round trip of its own.
	if n, most := trips.n.Load(), min(int64(reads/refreshGather)+1, keys/4); n > most {
		t.Fatalf("%d L2 round trips for %d keys due 5 ms apart over %v, want at most %d", n, keys, reads, most)
	}
}

// Due keys that L2 no longer holds (its TTL ended) are reloaded from the
// store with one LoadMany per batch, not one load each, into L1 and L2; a
// key LoadMany cannot load is loaded on its own. An invalidation during
// LoadMany leaves nothing of it in either cache.
func TestCacheReloadsFromStoreInOneRead(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	const keys = 30
	var (
		generation atomic.Int64 // of the store's rows
		many, each atomic.Int64
		during     atomic.Pointer[func()]
	)
	snap := func(k string) *Snapshot {
		i, _ := strconv.Atoi(k[1:])
		s := activeSnapshot(int64(i + 1))
		s.User.RPMLimit = generation.Load()
		return s
	}
	cfg := testConfig(prefix)
	cfg.LoadMany = func(_ context.Context, hashes []string) ([]*Snapshot, error) {
		many.Add(1)
		out := make([]*Snapshot, len(hashes))
		for i, k := range hashes {
			if k != "k0" { // k0: LoadMany cannot, the single load can
				out[i] = snap(k)
			}
		}
		// The rows are read; an invalidation may come before they are cached.
		if f := during.Swap(nil); f != nil {
			(*f)()
		}
		return out, nil
	}
	var loads, reloads atomic.Int64
	c := NewCache(cfg, rdb, func(_ context.Context, k string) (*Snapshot, error) {
		each.Add(1)
		return snap(k), nil
	}, CacheHooks{Load: func() { loads.Add(1) }, Reload: func() { reloads.Add(1) }})
	clk := &fakeClock{}
	useClock(c, clk)
	generation.Store(1)
	for i := range keys {
		if _, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if l, r := loads.Load(), reloads.Load(); l != keys || r != 0 {
		t.Fatalf("after the first reads: %d store loads, %d of them reloads; want %d and 0", l, r, keys)
	}
	each.Store(0)
	// Reload every key due: L2 has lost them all, the store has generation 2.
	reloadAll := func() {
		t.Helper()
		for i := range keys {
			if err := rdb.Del(ctx, prefix+"k"+strconv.Itoa(i)).Err(); err != nil {
				t.Fatal(err)
			}
		}
		clk.advance(31 * time.Second)
		for i := range keys {
			if _, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		awaitRefreshes(t, c)
	}
	generation.Store(2)
	reloadAll()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s, ok := inL1(c, "k0"); !ok || s.User.RPMLimit != 2 {
			return errors.New("k0's own load has not landed")
		}
		return nil
	})
	if n, m := each.Load(), many.Load(); n != 1 || m < 1 || m > 2 {
		t.Fatalf("%d LoadMany calls and %d single loads for %d due keys, want 1–2 and 1 (k0)", m, n, keys)
	}
	if l, r := loads.Load(), reloads.Load(); l != 2*keys || r != keys {
		t.Fatalf("after the reloads: %d store loads, %d of them reloads; want %d and %d", l, r, 2*keys, keys)
	}
	for i := range keys {
		k := "k" + strconv.Itoa(i)
		if s, ok := inL1(c, k); !ok || s.User.RPMLimit != 2 {
			t.Fatalf("L1 %s: %+v, want generation 2", k, s)
		}
		b, err := rdb.Get(ctx, prefix+k).Bytes()
		if err != nil {
			t.Fatalf("L2 %s: %v", k, err)
		}
		if s, err := Decode(b); err != nil || s.User.RPMLimit != 2 {
			t.Fatalf("L2 %s: %+v, %v; want generation 2", k, s, err)
		}
	}

	// Generation 3, and an invalidation of everything while LoadMany reads.
	invalidate := func() {
		generation.Store(4)
		all := make([]string, keys)
		for i := range all {
			all[i] = "k" + strconv.Itoa(i)
		}
		if err := c.ForgetHashes(ctx, all...); err != nil {
			t.Error(err)
		}
	}
	generation.Store(3)
	during.Store(&invalidate)
	reloadAll()
	for i := 1; i < keys; i++ {
		k := "k" + strconv.Itoa(i)
		if s, ok := inL1(c, k); ok && s.User.RPMLimit == 3 {
			t.Fatalf("L1 %s holds generation 3 after the invalidation", k)
		}
		if b, err := rdb.Get(ctx, prefix+k).Bytes(); err == nil {
			if s, _ := Decode(b); s != nil && s.User.RPMLimit == 3 {
				t.Fatalf("L2 %s holds generation 3 after the invalidation", k)
			}
		}
	}
}

// A reload that reads the L2 bytes an entry was decoded from, or encoded
// to, renews the entry without decoding them: the same snapshot, fresh
// again. Changed bytes are decoded, and so are unchanged ones once an
// invalidation has reached the entry.
func TestCacheReloadRenewsUnchangedEntries(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	put := func(limit int64) {
		t.Helper()
		s := activeSnapshot(7)
		s.User.RPMLimit = limit
		b, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, prefix+"k", b, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	loader := &countingLoader{snap: activeSnapshot(7)}
	cfg := testConfig(prefix)
	cfg.LoadMany = func(context.Context, []string) ([]*Snapshot, error) {
		return []*Snapshot{activeSnapshot(7)}, nil
	}
	c := NewCache(cfg, rdb, loader.load, CacheHooks{})
	clk := &fakeClock{}
	useClock(c, clk)
	entryOf := func() l1Entry {
		t.Helper()
		k := l1Key("k")
		e, ok := c.l1.get(&k, c.clock())
		if !ok {
			t.Fatal("k left L1")
		}
		return e
	}
	reloadDue := func() l1Entry {
		t.Helper()
		clk.advance(31 * time.Second) // past half of the minute's TTL
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		awaitRefreshes(t, c)
		return entryOf()
	}
	// renewed checks that a reload of unchanged bytes keeps the entry:
	// a mark put on it survives, which a decode would not leave.
	renewed := func(how string) {
		t.Helper()
		before := entryOf()
		inL1Slot(t, c, "k", func(sl *l1Slot) { sl.snap.user.concurrency = 99 })
		after := reloadDue()
		if after.snap.User.Concurrency != 99 {
			t.Fatalf("entry %s: a reload of unchanged L2 bytes decoded them again", how)
		}
		if after.freshUntil <= before.freshUntil {
			t.Fatalf("entry %s: the renewed entry is fresh until %v, no later than before (%v)", how, after.freshUntil, before.freshUntil)
		}
	}

	put(10)
	if _, err := c.Get(ctx, "k"); err != nil { // a miss, filled from L2
		t.Fatal(err)
	}
	renewed("filled from L2")

	put(20)
	if e := reloadDue(); e.snap.User.RPMLimit != 20 || e.snap.User.Concurrency == 99 {
		t.Fatalf("after L2 changed the reload kept limit %d, want 20", e.snap.User.RPMLimit)
	}
	renewed("decoded by a reload")

	inL1Slot(t, c, "k", func(sl *l1Slot) { sl.snap.user.concurrency = 99 })
	c.ForgetUser(7)
	c.reload([]string{"k"})
	if e := entryOf(); e.snap.User.Concurrency == 99 || e.stamp != c.gens.stamp(e.snap) {
		t.Fatal("after an invalidation the reload renewed the old entry")
	}

	// The store's snapshot, written to L2 by the load that put it in L1.
	if err := rdb.Del(ctx, prefix+"k").Err(); err != nil {
		t.Fatal(err)
	}
	c.reload([]string{"k"}) // L2 lacks k: LoadMany
	renewed("loaded by a reload")
	c.l1.invalidate("k")
	if err := rdb.Del(ctx, prefix+"k").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "k"); err != nil { // a miss of L1 and L2: the loader
		t.Fatal(err)
	}
	if loader.calls.Load() != 1 {
		t.Fatalf("%d loads, want 1", loader.calls.Load())
	}
	renewed("loaded by a miss")
}
