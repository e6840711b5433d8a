package snapshot

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/redis/go-redis/v9"
)

// The L1 defaults the README documents (caddyrpm sets them).
const (
	defaultL1Size = 1 << 20
	defaultL1TTL  = 5 * time.Minute
	defaultL2TTL  = 5 * time.Minute
)

// fakeClock is a settable time for a cache's freshness and refreshes.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// useClock makes c's freshness and refreshes follow clk.
func useClock(c *Cache, clk *fakeClock) {
	clk.ns.Store(time.Now().UnixNano())
	c.now, c.born = clk.now, clk.now()
}

// userSnapshot is the snapshot of user i's only key, in a shared group.
func userSnapshot(i int) *Snapshot {
	gid := int64(7)
	return &Snapshot{
		Version: Version, APIKeyID: int64(i), UserID: int64(i), GroupID: &gid, Status: "active",
		User:  &User{ID: int64(i), Status: "active", Role: "user", RPMLimit: 1000},
		Group: &Group{ID: gid, Name: "relay", Platform: "openai", Status: "active", RPMLimit: 100000},
	}
}

func userHash(i int) string { return fmt.Sprintf("%064x", i) }

// hitCounter counts L1 hits and misses and background refreshes.
type hitCounter struct{ hits, misses, refreshes, loads atomic.Int64 }

func (h *hitCounter) hooks() CacheHooks {
	return CacheHooks{
		Hit: func(layer string) {
			if layer == "l1" {
				h.hits.Add(1)
			}
		},
		Miss: func(layer string) {
			if layer == "l1" {
				h.misses.Add(1)
			}
		},
		Refresh: func() { h.refreshes.Add(1) },
		Load:    func() { h.loads.Add(1) },
	}
}

func (h *hitCounter) reset() {
	h.hits.Store(0)
	h.misses.Store(0)
	h.refreshes.Store(0)
	h.loads.Store(0)
}

// With the default size and TTL, 50,000 keys requested uniformly at random
// stay in L1: in steady state at least 97 % of the requests are answered
// from L1 (the target of issue 14), although every entry reaches the end
// of its TTL during the run. Each key is requested about 6 times per TTL
// (50,000 users at 1,000 requests/s): without the background refresh,
// expiry alone would make every key miss once per TTL, 1/7 of the
// requests (0.84 hits, measured). Time is simulated, so the result does
// not depend on the machine's speed: hits are counted, not timed.
func TestL1HoldsTheWorkingSetUnderUniformAccess(t *testing.T) {
	const (
		keys = 50_000
		rate = 1000 // requests per simulated second
	)
	rdb, prefix := redistest.Shared(t)
	hashes := make([]string, keys)
	index := make(map[string]int, keys)
	for i := range hashes {
		hashes[i] = userHash(i)
		index[hashes[i]] = i
	}
	var loads atomic.Int64
	var h hitCounter
	c := NewCache(CacheConfig{
		L1Size: defaultL1Size, L1TTL: defaultL1TTL, L2TTL: defaultL2TTL, NegativeTTL: 30 * time.Second,
		Jitter: 0.1, StaleIfError: 10 * time.Minute, L2Prefix: prefix, L2Timeout: 5 * time.Second,
	}, rdb, func(_ context.Context, hash string) (*Snapshot, error) {
		loads.Add(1)
		return userSnapshot(index[hash]), nil
	}, h.hooks())
	clk := &fakeClock{}
	useClock(c, clk)
	ctx := context.Background()

	// Every key once (as the benchmark's warm-up does), then two TTLs of
	// uniform traffic. In the first nothing has expired yet; in the second
	// the keys loaded at the start have each expired or been reloaded:
	// the steady state.
	for _, hash := range hashes {
		if _, err := c.Get(ctx, hash); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	step := time.Second / rate
	perTTL := int(defaultL1TTL / step)
	for round := range 2 {
		h.reset()
		for n := range perTTL {
			if n%rate == 0 {
				// Once per simulated second the background reloads catch
				// up, as they do in real time (a batch takes about a
				// millisecond), so the result does not depend on how fast
				// this machine runs them.
				awaitRefreshes(t, c)
			}
			clk.advance(step)
			i := rng.IntN(keys)
			s, err := c.Get(ctx, hashes[i])
			if err != nil || s.UserID != int64(i) {
				t.Fatalf("key %d: %+v, %v", i, s, err)
			}
		}
		hits, misses := h.hits.Load(), h.misses.Load()
		ratio := float64(hits) / float64(hits+misses)
		t.Logf("TTL %d: L1 hit ratio %.4f (%d hits, %d misses), %d background refreshes, %d store loads",
			round+1, ratio, hits, misses, h.refreshes.Load(), h.loads.Load())
		if round == 1 && ratio < 0.97 {
			t.Fatalf("steady-state L1 hit ratio %.4f, want >= 0.97", ratio)
		}
	}
	if n := c.l1.len(); n != keys {
		t.Errorf("L1 holds %d entries, want all %d keys", n, keys)
	}
	// The refreshes read L2, which holds every key throughout (its TTL
	// runs on Redis's clock, not the simulated one): the store was asked
	// once per key.
	if n := loads.Load(); n != keys {
		t.Errorf("%d store loads for %d keys, want one each", n, keys)
	}
}

// waitLoads waits until the loader has been called n times.
func waitLoads(t *testing.T, loads *atomic.Int64, n int64) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if got := loads.Load(); got != n {
			return fmt.Errorf("%d loads, want %d", got, n)
		}
		return nil
	})
}

// awaitRefreshes waits until the queued background reloads are done.
func awaitRefreshes(t *testing.T, c *Cache) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(c.refresher.due) > 0 || c.refresher.running.Load() {
			return errors.New("background reloads still queued or running")
		}
		return nil
	})
}

// A fresh entry read in the second half of its TTL is reloaded in the
// background: the read is a hit, and the key does not expire while it is
// in use. A reload that fails is retried at most every refreshRetry, however
// often the key is read, and the entry is served until its own TTL ends.
func TestCacheRefreshesAheadOfExpiry(t *testing.T) {
	var (
		mu    sync.Mutex
		limit int64
		fail  error
		loads atomic.Int64
	)
	var h hitCounter
	c := NewCache(CacheConfig{L1Size: 100, L1TTL: time.Minute, NegativeTTL: time.Minute, StaleIfError: time.Minute},
		nil, func(context.Context, string) (*Snapshot, error) {
			loads.Add(1)
			mu.Lock()
			defer mu.Unlock()
			if fail != nil {
				return nil, fail
			}
			limit++
			s := userSnapshot(1)
			s.User.RPMLimit = limit
			return s, nil
		}, h.hooks())
	clk := &fakeClock{}
	useClock(c, clk)
	ctx := context.Background()
	get := func(wantLimit int64) {
		t.Helper()
		s, err := c.Get(ctx, "k")
		if err != nil || s.User.RPMLimit != wantLimit {
			t.Fatalf("got %+v, %v; want the snapshot of load %d", s, err, wantLimit)
		}
	}

	get(1) // miss: load 1, fresh for 60s, refreshed from 30s
	clk.advance(29 * time.Second)
	get(1)
	if n := h.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes in the first half of the TTL", n)
	}
	clk.advance(2 * time.Second) // 31s
	get(1)                       // a hit, and the reload starts
	if n := h.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes at 31s, want 1", n)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s, ok := inL1(c, "k"); !ok || s.User.RPMLimit != 2 {
			return errors.New("the reload has not landed in L1")
		}
		return nil
	})
	// From 61s the entry of 31s is due for a reload; now the store fails.
	mu.Lock()
	fail = errors.New("store down")
	mu.Unlock()
	clk.advance(40 * time.Second) // 71s: past the first entry's TTL, within the reload's
	get(2)                        // a hit; the reload fails in the background
	if hits, misses := h.hits.Load(), h.misses.Load(); hits != 3 || misses != 1 {
		t.Fatalf("%d hits, %d misses; want 3 and 1 (the first read)", hits, misses)
	}
	waitLoads(t, &loads, 3) // the failed reload
	// 72s … 75s: no attempt until 5s after the failed one.
	for range 4 {
		clk.advance(time.Second)
		get(2)
	}
	if n := h.refreshes.Load(); n != 2 {
		t.Fatalf("%d refreshes by 75s, want 2 (at 31s and 71s)", n)
	}
	clk.advance(time.Second) // 76s
	get(2)
	if n := h.refreshes.Load(); n != 3 {
		t.Fatalf("%d refreshes at 76s, want 3: the retry", n)
	}
	waitLoads(t, &loads, 4) // the retry

	// 96s: the entry of 31s has expired; the store still fails.
	clk.advance(20 * time.Second)
	get(2) // served stale (StaleIfError)
	if n := h.misses.Load(); n != 2 {
		t.Fatalf("%d misses, want 2", n)
	}
}

// fullSnapshot has every field set, IP lists included.
func fullSnapshot() *Snapshot {
	gid, ov := int64(7), int64(0)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Snapshot{
		Version: Version, APIKeyID: 11, UserID: 12, GroupID: &gid, Status: "active",
		IPWhitelist: []string{"10.0.0.0/8", "::1"}, IPBlacklist: []string{"10.1.2.3"},
		Quota: 5.5, QuotaUsed: 1.25, ExpiresAt: &exp,
		User: &User{ID: 12, Status: "active", Role: "admin", RPMLimit: 60, UserGroupRPMOverride: &ov,
			Concurrency: 3, Balance: 9.75},
		Group: &Group{ID: gid, Name: "relay", Platform: "openai", Status: "active", RPMLimit: 600},
	}
	if err := s.Prepare(); err != nil {
		panic(err)
	}
	return s
}

// Memory of L1 per snapshot, as Decode builds them from L2, key and index
// included: the basis of the default l1_size of 1,048,576 (about 275 MiB
// when full). Heap in use is read after a GC around storing 100,000.
func TestL1BytesPerSnapshot(t *testing.T) {
	const n = 100_000
	c := NewCache(CacheConfig{L1Size: defaultL1Size, L1TTL: time.Hour, NegativeTTL: time.Minute, StaleIfError: time.Hour},
		nil, nil, CacheHooks{})
	encoded := make([][]byte, n)
	for i := range encoded {
		encoded[i], _ = Encode(userSnapshot(1_000_000 + i))
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for i := range n {
		s, err := Decode(encoded[i])
		if err != nil {
			t.Fatal(err)
		}
		c.setL1(userHash(1_000_000+i), s)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	per := float64(m1.HeapAlloc-m0.HeapAlloc) / n
	t.Logf("%.0f bytes per snapshot in L1: %.0f MiB when 1,048,576 are", per, per)
	if per > 320 {
		t.Errorf("%.0f bytes per snapshot, want at most 320", per)
	}
	runtime.KeepAlive(c)
	runtime.KeepAlive(encoded)
}

// afterL2Read runs f once, after the first L2 read of key (an MGET, or a
// GET in a pipeline) has been answered and before its caller sees the
// answer.
type afterL2Read struct {
	key string
	f   atomic.Pointer[func()]
}

func (h *afterL2Read) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterL2Read) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.after(cmd)
		return err
	}
}

func (h *afterL2Read) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.after(cmd)
		}
		return err
	}
}

// after runs f if cmd read key and f has not run yet.
func (h *afterL2Read) after(cmd redis.Cmder) {
	if name := cmd.Name(); name != "get" && name != "mget" {
		return
	}
	if slices.Contains(cmd.Args()[1:], any(h.key)) {
		if f := h.f.Swap(nil); f != nil {
			(*f)()
		}
	}
}

// A background reload that read L2 before an invalidation ran does not
// write what it read: the key's next read loads the new snapshot.
func TestCacheReloadDoesNotOutliveAnInvalidation(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	hook := &afterL2Read{key: prefix + "k"}
	rdb.AddHook(hook)
	var (
		mu    sync.Mutex
		limit int64 = 1
	)
	c := NewCache(CacheConfig{L1Size: 100, L1TTL: time.Minute, L2TTL: time.Minute, NegativeTTL: time.Minute,
		StaleIfError: time.Minute, L2Prefix: prefix, L2Timeout: 5 * time.Second},
		rdb, func(context.Context, string) (*Snapshot, error) {
			mu.Lock()
			defer mu.Unlock()
			s := userSnapshot(1)
			s.User.RPMLimit = limit
			return s, nil
		}, CacheHooks{})
	clk := &fakeClock{}
	useClock(c, clk)
	ctx := context.Background()
	if _, err := c.Get(ctx, "k"); err != nil { // L1 and L2 hold limit 1
		t.Fatal(err)
	}

	// The limit changes in the store; its invalidation runs while the
	// reload's L2 read (of limit 1) is on its way back.
	invalidate := func() {
		mu.Lock()
		limit = 2
		mu.Unlock()
		if err := c.ForgetHashes(ctx, "k"); err != nil {
			t.Error(err)
		}
	}
	hook.f.Store(&invalidate)
	clk.advance(31 * time.Second)
	if _, err := c.Get(ctx, "k"); err != nil { // a hit that queues the reload
		t.Fatal(err)
	}
	awaitRefreshes(t, c)
	if hook.f.Load() != nil {
		t.Fatal("the reload read nothing from L2")
	}
	if s, ok := inL1(c, "k"); ok {
		t.Fatalf("L1 holds limit %d after the invalidation", s.User.RPMLimit)
	}
	s, err := c.Get(ctx, "k")
	if err != nil || s.User.RPMLimit != 2 {
		t.Fatalf("after the invalidation: %+v, %v; want limit 2", s, err)
	}
}
