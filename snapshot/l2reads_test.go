package snapshot

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/redis/go-redis/v9"
)

// slowRoundTrips is a go-redis hook on the test's client that counts round
// trips (single commands and pipelines) and makes each take delay longer,
// so that misses arriving together find a read in flight.
type slowRoundTrips struct {
	delay time.Duration
	n     atomic.Int64
}

func (h *slowRoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slowRoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		time.Sleep(h.delay)
		return next(ctx, cmd)
	}
}

func (h *slowRoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		time.Sleep(h.delay)
		return next(ctx, cmds)
	}
}

// TestCacheMissesShareL2Reads: 64 concurrent L1 misses of keys that L2
// holds are all answered from L2 — none reaches the store — in a few
// round trips rather than 64: the misses that arrive while a read is out
// go together in the next one.
func TestCacheMissesShareL2Reads(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	const misses = 64
	putL2(t, rdb, prefix, misses, func(i int) *Snapshot { return activeSnapshot(int64(i + 1)) })
	trips := &slowRoundTrips{delay: 20 * time.Millisecond}
	rdb.AddHook(trips)
	l := &countingLoader{snap: activeSnapshot(0)}
	var l2Hits atomic.Int64
	c := NewCache(testConfig(prefix), rdb, l.load, CacheHooks{Hit: func(layer string) {
		if layer == "l2" {
			l2Hits.Add(1)
		}
	}})

	var wg sync.WaitGroup
	for i := range misses {
		wg.Go(func() {
			s, err := c.Get(ctx, "k"+strconv.Itoa(i))
			if err != nil {
				t.Error(err)
				return
			}
			if s.UserID != int64(i+1) {
				t.Errorf("key %d: served user %d, want %d", i, s.UserID, i+1)
			}
		})
	}
	wg.Wait()
	if n := l.calls.Load(); n != 0 {
		t.Fatalf("%d store loads; L2 held every key", n)
	}
	if n := l2Hits.Load(); n != misses {
		t.Fatalf("%d L2 hits, want %d", n, misses)
	}
	// The first miss goes out alone; the others queue behind it and go
	// in the next read (a slow scheduler may split them over a few).
	if n := trips.n.Load(); n > 8 {
		t.Fatalf("%d L2 round trips for %d concurrent misses, want at most 8", n, misses)
	}
	t.Logf("%d concurrent misses, %d L2 round trips", misses, trips.n.Load())
}

// One L2 read of many keys returns each key's bytes in order, nothing for
// a key that is missing or holds another type, in one call of the client:
// an MGET on a single Redis, pipelined GETs on a Cluster (one round trip
// per node), whose keys are on many slots.
func TestReadL2Many(t *testing.T) {
	single, prefix := redistest.Shared(t)
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.StartCluster(t)})
	t.Cleanup(func() { cluster.Close() })
	for name, rdb := range map[string]redis.UniversalClient{"single": single, "cluster": cluster} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c := NewCache(testConfig(prefix), rdb, (&countingLoader{}).load, CacheHooks{})
			keys := make([]string, 300)
			for i := range keys {
				keys[i] = "many" + strconv.Itoa(i)
				if i%3 == 0 {
					continue // missing
				}
				if err := rdb.Set(ctx, prefix+keys[i], "bytes of "+keys[i], time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := rdb.Del(ctx, prefix+keys[1]).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.HSet(ctx, prefix+keys[1], "f", "v").Err(); err != nil { // another type
				t.Fatal(err)
			}
			trips := &slowRoundTrips{}
			rdb.AddHook(trips)
			got := c.readL2Many(ctx, keys)
			if n := trips.n.Load(); n != 1 {
				t.Errorf("%d client calls, want 1", n)
			}
			for i, b := range got {
				want := "bytes of " + keys[i]
				if i%3 == 0 || i == 1 {
					want = ""
				}
				if string(b) != want {
					t.Fatalf("%s: %q, want %q", keys[i], b, want)
				}
			}
		})
	}
}
