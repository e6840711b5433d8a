package snapshot

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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
	for i := range keys {
		b, err := Encode(activeSnapshot(int64(i + 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, prefix+"k"+strconv.Itoa(i), b, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
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
