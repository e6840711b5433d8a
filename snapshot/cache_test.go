package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/redis/go-redis/v9"
)

// countingLoader returns snap (or err) and counts calls.
type countingLoader struct {
	calls atomic.Int64
	mu    sync.Mutex
	snap  *Snapshot
	err   error
	delay time.Duration
}

func (l *countingLoader) load(context.Context, string) (*Snapshot, error) {
	l.calls.Add(1)
	time.Sleep(l.delay)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap, l.err
}

func (l *countingLoader) set(s *Snapshot, err error) {
	l.mu.Lock()
	l.snap, l.err = s, err
	l.mu.Unlock()
}

func testConfig(prefix string) CacheConfig {
	return CacheConfig{
		L1Size: 1000, L1TTL: time.Minute, L2TTL: time.Minute, NegativeTTL: time.Minute,
		StaleIfError: time.Minute, L2Prefix: prefix, L2Timeout: time.Second,
	}
}

// putL2 stores snapshot(i) of each i < n in L2 under the key "k<i>",
// encoded as the cache writes it.
func putL2(t testing.TB, rdb *redis.Client, prefix string, n int, snapshot func(i int) *Snapshot) {
	t.Helper()
	for i := range n {
		b, err := Encode(snapshot(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(context.Background(), prefix+"k"+strconv.Itoa(i), b, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func activeSnapshot(userID int64) *Snapshot {
	gid := int64(3)
	return &Snapshot{
		Version: Version, APIKeyID: 1, UserID: userID, GroupID: &gid, Status: "active",
		User:  &User{ID: userID, Status: "active", RPMLimit: 10},
		Group: &Group{ID: gid, Name: "g", Status: "active", RPMLimit: 5},
	}
}

// keyLoader returns a snapshot for every key and records the key hashes it
// was asked for.
type keyLoader struct {
	mu   sync.Mutex
	keys []string
}

func (l *keyLoader) load(_ context.Context, keyHash string) (*Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, keyHash)
	return activeSnapshot(7), nil
}

func (l *keyLoader) asked() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.keys)
}

// GetSum reads the entry Get reads for the hex form of the sum: a miss
// loads (and fills L2) under the hex form, Get of it then hits the same
// entry, and a due reload read through GetSum reloads the hex form.
func TestCacheGetSumIsGetOfTheHexHash(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	loader := &keyLoader{}
	var l1Hits atomic.Int64
	c := NewCache(testConfig(prefix), rdb, loader.load, CacheHooks{Hit: func(layer string) {
		if layer == "l1" {
			l1Hits.Add(1)
		}
	}})
	clk := &fakeClock{}
	useClock(c, clk)
	sum := sha256.Sum256([]byte("sk-rpm-get-sum"))
	keyHash := hex.EncodeToString(sum[:])

	bySum, err := c.GetSum(ctx, &sum)
	if err != nil {
		t.Fatal(err)
	}
	if got := loader.asked(); !slices.Equal(got, []string{keyHash}) {
		t.Fatalf("a miss of GetSum loaded %q, want [%q]", got, keyHash)
	}
	if n, err := rdb.Exists(ctx, prefix+keyHash).Result(); err != nil || n != 1 {
		t.Fatalf("L2 entry under the hex form: exists %d, %v", n, err)
	}
	byHex, err := c.Get(ctx, keyHash)
	if err != nil {
		t.Fatal(err)
	}
	if l1Hits.Load() != 1 || len(loader.asked()) != 1 || byHex.UserID != bySum.UserID {
		t.Fatalf("Get of the hex form: %d L1 hits (want 1), %d loads (want 1), user %d (want %d)",
			l1Hits.Load(), len(loader.asked()), byHex.UserID, bySum.UserID)
	}

	// Past half the TTL a read queues a reload; L2 lacks the entry, so the
	// reload loads it from the store again.
	if err := rdb.Del(ctx, prefix+keyHash).Err(); err != nil {
		t.Fatal(err)
	}
	clk.advance(31 * time.Second)
	if _, err := c.GetSum(ctx, &sum); err != nil {
		t.Fatal(err)
	}
	awaitRefreshes(t, c)
	// Without LoadMany the reload hands a key L2 lacks to a load of its
	// own, which runs on after the reload.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if got := loader.asked(); !slices.Equal(got, []string{keyHash, keyHash}) {
			return fmt.Errorf("after a due read through GetSum the store was asked for %q, want [%q %q]", got, keyHash, keyHash)
		}
		return nil
	})
}

func TestCacheOverwritesOtherVersionsAndCorruptEntries(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	ctx := context.Background()
	for name, stored := range map[string]string{
		"version 6": `{"version":6,"api_key_id":1,"user_id":99,"status":"disabled"}`,
		"corrupt":   `{"version":7,"user_id":`,
		"not json":  "\x00\x01garbage",
	} {
		t.Run(name, func(t *testing.T) {
			hash := "h-" + name
			rdb.Set(ctx, prefix+hash, stored, time.Minute)
			l := &countingLoader{snap: activeSnapshot(7)}
			c := NewCache(testConfig(prefix), rdb, l.load, CacheHooks{})
			s, err := c.Get(ctx, hash)
			if err != nil {
				t.Fatal(err)
			}
			if s.UserID != 7 || s.Status != "active" || l.calls.Load() != 1 {
				t.Fatalf("served user %d status %q after %d loads; want the store's snapshot", s.UserID, s.Status, l.calls.Load())
			}
			b, err := rdb.Get(ctx, prefix+hash).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := Decode(b); err != nil || got.UserID != 7 {
				t.Fatalf("L2 not overwritten with version %d: %s (%v)", Version, b, err)
			}
		})
	}
}

// TestCacheNegativeEntriesExpire checks that an unknown key is remembered
// in L1 for NegativeTTL and never written to L2: a made-up key must not
// cost Redis memory.
func TestCacheNegativeEntriesExpire(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	cfg := testConfig(prefix)
	cfg.NegativeTTL = 300 * time.Millisecond
	l := &countingLoader{snap: Negative()}
	c := NewCache(cfg, rdb, l.load, CacheHooks{})
	ctx := context.Background()
	for range 20 {
		s, err := c.Get(ctx, "unknown")
		if err != nil || !s.NotFound {
			t.Fatalf("got %+v, %v; want a negative entry", s, err)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("%d store loads for a cached negative entry, want 1", n)
	}
	if n := rdb.Exists(ctx, prefix+"unknown").Val(); n != 0 {
		t.Fatalf("a negative entry was written to L2 (ttl %v)", rdb.PTTL(ctx, prefix+"unknown").Val())
	}
	// Another instance on the same Redis finds nothing in L2 and asks
	// the store itself.
	l2 := &countingLoader{snap: Negative()}
	if s, err := NewCache(cfg, rdb, l2.load, CacheHooks{}).Get(ctx, "unknown"); err != nil || !s.NotFound {
		t.Fatalf("second instance: %+v, %v", s, err)
	}
	if n := l2.calls.Load(); n != 1 {
		t.Fatalf("second instance: %d store loads, want 1", n)
	}
	time.Sleep(450 * time.Millisecond)
	if _, err := c.Get(ctx, "unknown"); err != nil {
		t.Fatal(err)
	}
	if n := l.calls.Load(); n != 2 {
		t.Fatalf("%d store loads after the negative TTL, want 2", n)
	}
	if n := rdb.Exists(ctx, prefix+"unknown").Val(); n != 0 {
		t.Fatal("a negative entry was written to L2 after its reload")
	}
}

func TestCacheCollapsesConcurrentMisses(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	l := &countingLoader{snap: activeSnapshot(1), delay: 50 * time.Millisecond}
	c := NewCache(testConfig(prefix), rdb, l.load, CacheHooks{})
	together(500, func() {
		if _, err := c.Get(context.Background(), "cold"); err != nil {
			t.Error(err)
		}
	})
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("%d store loads for 500 concurrent misses, want 1", n)
	}
}

func TestCacheServesStaleWhileStoreIsDown(t *testing.T) {
	cfg := testConfig("")
	cfg.L1TTL = 50 * time.Millisecond
	cfg.StaleIfError = 300 * time.Millisecond
	l := &countingLoader{snap: activeSnapshot(1)}
	c := NewCache(cfg, nil, l.load, CacheHooks{})
	ctx := context.Background()
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	l.set(nil, errors.New("connection refused"))
	time.Sleep(80 * time.Millisecond) // past the TTL, within stale_if_error
	s, err := c.Get(ctx, "k")
	if err != nil || s.UserID != 1 {
		t.Fatalf("stale snapshot not served: %+v, %v", s, err)
	}
	if _, err := c.Get(ctx, "never-seen"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("uncached key while the store is down: %v, want ErrUnavailable", err)
	}
	time.Sleep(350 * time.Millisecond) // past stale_if_error
	if _, err := c.Get(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("snapshot served past stale_if_error: %v", err)
	}
}

func TestCacheDoesNotServeStaleNegatives(t *testing.T) {
	cfg := testConfig("")
	cfg.NegativeTTL = 30 * time.Millisecond
	l := &countingLoader{snap: Negative()}
	c := NewCache(cfg, nil, l.load, CacheHooks{})
	ctx := context.Background()
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	l.set(nil, errors.New("down"))
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Get(ctx, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a stale negative entry was served: %v", err)
	}
}

func TestCacheForget(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	l := &countingLoader{snap: activeSnapshot(5)}
	c := NewCache(testConfig(prefix), rdb, l.load, CacheHooks{})
	ctx := context.Background()
	mustGet := func() {
		t.Helper()
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	mustGet()
	c.ForgetL1(ForUser(6)) // another user: nothing happens
	mustGet()
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("loads %d, want 1", n)
	}
	c.ForgetL1(ForGroup(3)) // L1 only: L2 answers
	mustGet()
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("loads %d after an L1-only forget, want 1 (L2 hit)", n)
	}
	if err := c.ForgetHashes(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, prefix+"k").Val() != 0 {
		t.Fatal("L2 entry survived ForgetHashes")
	}
	mustGet()
	if n := l.calls.Load(); n != 2 {
		t.Fatalf("loads %d after ForgetHashes, want 2", n)
	}
	if err := c.FlushL2(ctx); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, prefix+"k").Val() != 0 {
		t.Fatal("L2 entry survived FlushL2")
	}
}

// redisDown is a Health that reports Redis down.
type redisDown struct{}

func (redisDown) RedisDown() bool { return true }

func TestCacheSkipsL2WhenDown(t *testing.T) {
	// A client pointed at a closed port: any L2 call would fail after the
	// dial; with Redis reported down none is made.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: time.Second})
	defer dead.Close()
	var l2Errors atomic.Int64
	cfg := testConfig("x:")
	cfg.Health = redisDown{}
	l := &countingLoader{snap: activeSnapshot(1)}
	c := NewCache(cfg, dead, l.load, CacheHooks{L2Errors: func() { l2Errors.Add(1) }})
	if _, err := c.Get(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	if n := l2Errors.Load(); n != 0 {
		t.Fatalf("%d L2 errors with L2 marked down, want 0", n)
	}
}

// beforeSet is a go-redis hook on the test's client that runs f once just
// before the first SET of key is sent, to place an invalidation between a
// load's epoch check and its L2 write landing.
type beforeSet struct {
	key  string
	once sync.Once
	f    func()
}

func (h *beforeSet) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeSet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "set" && len(args) > 1 && args[1] == h.key {
			h.once.Do(h.f)
		}
		return next(ctx, cmd)
	}
}

func (h *beforeSet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestCacheLoadDoesNotOutliveAnInvalidation: a load never leaves its
// snapshot in L1 or L2 after an invalidation that ran while it was loading
// (the loader blocks until the test has invalidated) or while it was
// writing (the invalidation's L2 delete lands just before the load's SET).
// The next Get loads again and serves the store's new state.
func TestCacheLoadDoesNotOutliveAnInvalidation(t *testing.T) {
	ctx := context.Background()
	old, changed := activeSnapshot(8), activeSnapshot(8)
	changed.Status = "disabled"

	check := func(t *testing.T, rdb *redis.Client, prefix string, c *Cache, l *countingLoader) {
		t.Helper()
		if n := rdb.Exists(ctx, prefix+"k").Val(); n != 0 {
			b, _ := rdb.Get(ctx, prefix+"k").Bytes()
			t.Fatalf("L2 holds the snapshot of a load older than the invalidation: %s", b)
		}
		l.set(changed, nil)
		s, err := c.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != "disabled" || l.calls.Load() != 2 {
			t.Fatalf("after the invalidation: status %q after %d loads, want the store's new state from a second load", s.Status, l.calls.Load())
		}
	}

	t.Run("during the load", func(t *testing.T) {
		rdb, prefix := redistest.Shared(t)
		l := &countingLoader{snap: old}
		entered, release := make(chan struct{}), make(chan struct{})
		c := NewCache(testConfig(prefix), rdb, func(ctx context.Context, h string) (*Snapshot, error) {
			if l.calls.Load() == 0 {
				close(entered)
				<-release
			}
			return l.load(ctx, h)
		}, CacheHooks{})
		done := make(chan error, 1)
		go func() {
			_, err := c.Get(ctx, "k")
			done <- err
		}()
		<-entered
		if err := c.ForgetHashes(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		check(t, rdb, prefix, c, l)
	})

	t.Run("during the write", func(t *testing.T) {
		rdb, prefix := redistest.Shared(t)
		l := &countingLoader{snap: old}
		var c *Cache
		hook := &beforeSet{key: prefix + "k"}
		hook.f = func() {
			// What an invalidation of this key does on this instance.
			c.ForgetL1(ForUser(8))
			if err := c.ForgetHashes(ctx, "k"); err != nil {
				t.Error(err)
			}
		}
		rdb.AddHook(hook)
		c = NewCache(testConfig(prefix), rdb, l.load, CacheHooks{})
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		check(t, rdb, prefix, c, l)
	})
}

// TestFlushL2PrefixIsLiteral: glob characters in the prefix match only
// themselves, so a flush deletes this prefix's entries and never another
// prefix's keys that the unescaped pattern would match.
func TestFlushL2PrefixIsLiteral(t *testing.T) {
	rdb, base := redistest.Shared(t)
	ctx := context.Background()
	prefix := base + `t[1]*\?:`
	c := NewCache(testConfig(prefix), rdb, (&countingLoader{snap: activeSnapshot(1)}).load, CacheHooks{})
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	other := base + "t1zz?:other" // matched by the unescaped pattern
	if err := rdb.Set(ctx, other, "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FlushL2(ctx); err != nil {
		t.Fatal(err)
	}
	if rdb.Exists(ctx, prefix+"k").Val() != 0 {
		t.Fatal("own L2 entry survived FlushL2")
	}
	if rdb.Exists(ctx, other).Val() != 1 {
		t.Fatal("FlushL2 deleted a key of another prefix")
	}
}

// hangingLoader answers only once released, ignoring its context, like a
// store behind a dead network path whose driver does not give up. It
// records whether each call carried a deadline.
type hangingLoader struct {
	calls       atomic.Int64
	noDeadline  atomic.Int64
	release     chan struct{}
	releaseOnce sync.Once
	snap        *Snapshot
}

func newHangingLoader(t *testing.T) *hangingLoader {
	l := &hangingLoader{release: make(chan struct{}), snap: activeSnapshot(1)}
	t.Cleanup(l.unblock)
	return l
}

func (l *hangingLoader) load(ctx context.Context, _ string) (*Snapshot, error) {
	l.calls.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		l.noDeadline.Add(1)
	}
	<-l.release
	return l.snap, nil
}

func (l *hangingLoader) unblock() { l.releaseOnce.Do(func() { close(l.release) }) }

// together runs f in n goroutines that start at once, and returns when
// every one has returned.
func together(n int, f func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f()
		}()
	}
	close(start)
	wg.Wait()
}

// timedGet calls c.Get and returns how long it took; a call still running
// after 5 s is reported as an error instead of hanging the test.
func timedGet(ctx context.Context, c *Cache, key string) (*Snapshot, time.Duration, error) {
	type result struct {
		s   *Snapshot
		err error
	}
	ch := make(chan result, 1)
	begin := time.Now()
	go func() {
		s, err := c.Get(ctx, key)
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, time.Since(begin), r.err
	case <-time.After(5 * time.Second):
		return nil, time.Since(begin), errors.New("Get still waiting after 5s")
	}
}

// TestCacheWaitersLeaveAHangingLoad checks the bound on a load that does
// not end: every waiter of the shared load gets ErrUnavailable within
// LoadTimeout, the load itself carries a deadline, and a waiter whose
// context ends leaves at once.
func TestCacheWaitersLeaveAHangingLoad(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cfg := testConfig("")
	cfg.LoadTimeout = timeout
	l := newHangingLoader(t)
	c := NewCache(cfg, nil, l.load, CacheHooks{})

	together(50, func() {
		_, d, err := timedGet(context.Background(), c, "cold")
		if d > timeout+300*time.Millisecond {
			t.Errorf("a waiter of a hanging load returned after %v (%v), want about %v", d, err, timeout)
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("waiter of a hanging load: %v, want ErrUnavailable", err)
		}
	})
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent waiters, want 1", n)
	}
	if n := l.noDeadline.Load(); n != 0 {
		t.Fatalf("the shared load ran without a deadline")
	}

	// A waiter whose request ends (the client went away) leaves at once,
	// long before the load's bound.
	slow := testConfig("")
	slow.LoadTimeout = time.Minute
	c = NewCache(slow, nil, newHangingLoader(t).load, CacheHooks{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, d, err := timedGet(ctx, c, "cold")
	if d > time.Second {
		t.Fatalf("a waiter whose context was cancelled after 50ms returned after %v (%v)", d, err)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want ErrUnavailable and context.Canceled", err)
	}
}

// TestCacheServesStaleWhenLoadHangs checks that a known key past its TTL is
// served stale once the load's bound passes, not after the load ends.
func TestCacheServesStaleWhenLoadHangs(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cfg := testConfig("")
	cfg.L1TTL = 50 * time.Millisecond
	cfg.LoadTimeout = timeout
	good := &countingLoader{snap: activeSnapshot(7)}
	hanging := newHangingLoader(t)
	var down atomic.Bool
	var stale atomic.Int64
	c := NewCache(cfg, nil, func(ctx context.Context, k string) (*Snapshot, error) {
		if down.Load() {
			return hanging.load(ctx, k)
		}
		return good.load(ctx, k)
	}, CacheHooks{Stale: func() { stale.Add(1) }})
	if _, err := c.Get(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	time.Sleep(80 * time.Millisecond) // past the TTL, within stale_if_error
	s, d, err := timedGet(context.Background(), c, "k")
	if d > timeout+300*time.Millisecond {
		t.Fatalf("stale answer after %v (%v), want about %v", d, err, timeout)
	}
	if err != nil || s.UserID != 7 {
		t.Fatalf("stale snapshot not served: %+v, %v", s, err)
	}
	if stale.Load() != 1 {
		t.Fatalf("stale hook called %d times, want 1", stale.Load())
	}
}
