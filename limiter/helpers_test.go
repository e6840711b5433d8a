package limiter

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// minRemaining is how much of the Redis-clock minute must remain before a
// test that needs several requests in one window starts.
const minRemaining = 15 * time.Second

// singleClient connects to the shared Redis; its keys live under the
// returned Keys' prefix and are deleted on cleanup.
func singleClient(t testing.TB) (*redis.Client, Keys) {
	t.Helper()
	c, prefix := redistest.Shared(t)
	return c, Keys{Prefix: prefix}
}

// countedClient is singleClient with a hook counting the commands it sends.
func countedClient(t testing.TB) (redis.UniversalClient, Keys, *cmdCounter) {
	t.Helper()
	c, keys := singleClient(t)
	hook := &cmdCounter{}
	c.AddHook(hook)
	return c, keys, hook
}

// scriptedRedis is a Redis limiter on a counted client, its scripts loaded
// (so no NOSCRIPT fallback shows in the counts), at a point of the window
// with at least minRemaining left.
func scriptedRedis(t testing.TB) (*Redis, redis.UniversalClient, Keys, *cmdCounter) {
	t.Helper()
	c, keys, hook := countedClient(t)
	r := NewRedis(c)
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	redistest.WaitForWindow(t, c, minRemaining)
	return r, c, keys, hook
}

// clusterClient starts a private 3-node Redis Cluster.
func clusterClient(t testing.TB) (redis.UniversalClient, Keys) {
	t.Helper()
	_, c, keys := privateCluster(t, nil)
	return c, keys
}

// privateCluster starts a private 3-node Redis Cluster and returns its
// nodes and a client to it, which adds nodeHook (if not nil) to the client
// of each node.
func privateCluster(t testing.TB, nodeHook redis.Hook) ([]*redistest.Server, *redis.ClusterClient, Keys) {
	t.Helper()
	nodes := redistest.StartClusterNodes(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.Addrs(nodes), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	if nodeHook != nil {
		c.OnNewNode(func(n *redis.Client) { n.AddHook(nodeHook) })
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("cluster ping: %v", err)
	}
	return nodes, c, Keys{Prefix: redistest.Prefix(t)}
}

// redisNow returns the Redis server clock.
func redisNow(t testing.TB, c redis.UniversalClient) time.Time {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	return now
}

// cmdCounter is a go-redis hook counting the commands sent, by name.
type cmdCounter struct {
	evalsha, eval, other atomic.Int64
}

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.count(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *cmdCounter) count(cmd redis.Cmder) {
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		h.evalsha.Add(1)
	case "eval":
		h.eval.Add(1)
	default:
		h.other.Add(1)
	}
}

func (h *cmdCounter) reset() {
	h.evalsha.Store(0)
	h.eval.Store(0)
	h.other.Store(0)
}

func (h *cmdCounter) total() int64 { return h.evalsha.Load() + h.eval.Load() + h.other.Load() }

// parallel calls op n times from each of g goroutines (op gets the
// goroutine's index) and returns how many calls returned true. op reports
// its own errors.
func parallel(g, n int, op func(i int) bool) int64 {
	var count atomic.Int64
	var wg sync.WaitGroup
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if op(i) {
					count.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return count.Load()
}

// fakeClock is an injectable clock.
type fakeClock struct {
	ns atomic.Int64 // unix ns
}

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// privateClient starts a private redis-server for tests that change
// server-wide state.
func privateClient(t testing.TB) (*redis.Client, Keys) {
	t.Helper()
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c, Keys{Prefix: redistest.Prefix(t)}
}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the breaker tests fail dials on
	// purpose.
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// redisInfo returns the fields of the given INFO sections, by name.
func redisInfo(t testing.TB, c *redis.Client, sections ...string) map[string]string {
	t.Helper()
	text, err := c.Info(context.Background(), sections...).Result()
	if err != nil {
		t.Fatalf("redis info: %v", err)
	}
	info := make(map[string]string)
	for line := range strings.Lines(text) {
		if name, value, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			info[name] = value
		}
	}
	return info
}

// cmdStat returns one field (calls, usec, ...) of a command's line of INFO
// commandstats in info; 0 if the command has not run.
func cmdStat(t testing.TB, info map[string]string, cmd, field string) float64 {
	t.Helper()
	for f := range strings.SplitSeq(info["cmdstat_"+cmd], ",") {
		if v, ok := strings.CutPrefix(f, field+"="); ok {
			return infoFloat(t, v)
		}
	}
	return 0
}

func infoFloat(t testing.TB, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("redis info value %q: %v", s, err)
	}
	return v
}

// hotSet returns the reservation of a set of counters as two requests of
// it within rateBucket make it (see recentSets).
func hotSet(r *Redis, counters []Counter) *reservation {
	now := time.Now()
	r.reserve.lookup(counters, now)
	return r.reserve.lookup(counters, now)
}

// hotPool returns the pool of spare places of a slot tuple as two requests
// of it within rateBucket make it.
func hotPool(r *Redis, slots []Slot) *placePool {
	now := time.Now()
	r.reserve.pool(slots, now)
	return r.reserve.pool(slots, now)
}

// settleRefills waits until no set of r has a refill out, such as one
// started ahead (refillAhead) by the last local admission.
func settleRefills(t *testing.T, r *Redis) {
	t.Helper()
	waitFor(t, 2*time.Second, func() bool {
		r.reserve.mu.RLock()
		defer r.reserve.mu.RUnlock()
		for _, e := range r.reserve.sets {
			e.mu.Lock()
			out := e.refill != nil
			e.mu.Unlock()
			if out {
				return false
			}
		}
		return true
	}, "settled refills")
}
