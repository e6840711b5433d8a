package limiter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// fastLeases releases without delay worth waiting for.
var fastLeases = LeaseConfig{ReleaseDelay: time.Millisecond}

// newRedisAcquirer is NewRedis closed on cleanup.
func newRedisAcquirer(t testing.TB, c redis.UniversalClient, cfg LeaseConfig) *Redis {
	r := NewRedis(c, WithLeases(cfg))
	t.Cleanup(func() { r.Close() })
	return r
}

func redisSlotBackend(t *testing.T, c redis.UniversalClient, keys Keys) slotBackend {
	return slotBackend{
		acq:   newRedisAcquirer(t, c, fastLeases),
		keys:  keys,
		held:  func(t *testing.T, key string) int64 { return rawHeld(t, c, key) },
		count: func(t *testing.T, key string) int64 { return rawCount(t, c, key) },
		wait:  func(t *testing.T) { redistest.WaitForWindow(t, c, minRemaining) },
	}
}

// rawHeld counts a set's members whose deadline is after the Redis clock
// (the layout documented in lease.go), independent of the scripts.
func rawHeld(t *testing.T, c redis.UniversalClient, key string) int64 {
	t.Helper()
	now := strconv.FormatInt(redisNow(t, c).UnixMilli(), 10)
	n, err := c.ZCount(context.Background(), key, "("+now, "+inf").Result()
	if err != nil {
		t.Fatalf("zcount %s: %v", key, err)
	}
	return n
}

func TestRedisSlots(t *testing.T) {
	c, keys := singleClient(t)
	sub := func(name string) Keys { return Keys{Prefix: keys.Prefix + name + ":"} }
	t.Run("cap", func(t *testing.T) { testSlotCap(t, redisSlotBackend(t, c, sub("cap"))) })
	t.Run("with counters", func(t *testing.T) { testSlotsWithCounters(t, redisSlotBackend(t, c, sub("counters"))) })
	t.Run("double release", func(t *testing.T) { testDoubleRelease(t, redisSlotBackend(t, c, sub("double"))) })
	t.Run("model", func(t *testing.T) {
		b := redisSlotBackend(t, c, sub("model"))
		other := newRedisAcquirer(t, c, fastLeases)
		testSlotModel(t, b, other, func(t *testing.T) {
			// Every release sent: the set holds exactly the leases held.
			want := b.acq.InFlight() + other.InFlight()
			testutil.WaitFor(t, 2*time.Second, b.heldIs(t, b.keys.UserSlots(4), want))
		})
	})
	t.Run("concurrent", func(t *testing.T) {
		b := redisSlotBackend(t, c, sub("concurrent"))
		testSlotsConcurrent(t, b, newRedisAcquirer(t, c, fastLeases))
	})
}

// TestRedisAcquisitionsExact: identical concurrent acquisitions, decided
// in shared script calls as groups, each get a place of their own, exactly
// up to the cap.
func TestRedisAcquisitionsExact(t *testing.T) {
	c, keys := singleClient(t)
	r := newRedisAcquirer(t, c, fastLeases)
	redistest.WaitForWindow(t, c, minRemaining)
	cs := []Counter{userCounter(keys, 1, 1000)}
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 7}}
	var mu sync.Mutex
	var leases []*Lease
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			_, lease, err := r.CheckAcquire(context.Background(), cs, ss)
			if err != nil {
				t.Error(err)
			}
			if lease != nil {
				mu.Lock()
				leases = append(leases, lease)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(leases) != 7 {
		t.Fatalf("%d admitted, want 7", len(leases))
	}
	members, err := c.ZRange(context.Background(), ss[0].Key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 7 {
		t.Fatalf("set members %v, want 7 distinct ones", members)
	}
	if got := rawCount(t, c, cs[0].Key); got != 7 {
		t.Fatalf("counter %d, want 7", got)
	}
	for _, l := range leases {
		l.Release()
	}
}

// TestRedisIdenticalAcquisitionsDecidedTogether: one script call decides
// groups of identical acquisitions as the same checks in a row would be,
// each admitted one adding its own member to every set of its check.
func TestRedisIdenticalAcquisitionsDecidedTogether(t *testing.T) {
	r, c, keys, _ := scriptedRedis(t)
	setFull := []Counter{userCounter(keys, 1, 10)} // the set fills first
	setFullSlots := []Slot{{Key: keys.UserSlots(1), Limit: 2}, {Key: keys.ZoneUserSlots("z", 1), Limit: 9}}
	counterFull := []Counter{userCounter(keys, 2, 2)} // the counter fills first
	counterFullSlots := []Slot{{Key: keys.UserSlots(2), Limit: 5}}
	var checks []*pendingCheck
	add := func(cs []Counter, ss []Slot) {
		member := "m" + strconv.Itoa(len(checks))
		checks = append(checks, &pendingCheck{counters: cs, slots: ss, member: &member})
	}
	add(setFull, setFullSlots)         // 0
	add(counterFull, counterFullSlots) // 1
	add(setFull, nil)                  // 2: no slots, a group of its own
	add(setFull, setFullSlots)         // 3
	add(counterFull, counterFullSlots) // 4
	add(setFull, setFullSlots)         // 5
	add(counterFull, counterFullSlots) // 6
	add(setFull, setFullSlots)         // 7
	if groups := groupChecks(checks); len(groups) != 3 || len(groups[0]) != 4 || len(groups[1]) != 3 || len(groups[2]) != 1 {
		t.Fatalf("%d groups, want set-full ×4, counter-full ×3, plain ×1", len(groups))
	}
	r.run(context.Background(), checks)
	wants := []struct {
		allowed            bool
		denied, deniedSlot int
		counts, inFlight   []int64
	}{
		{true, -1, -1, []int64{1}, []int64{1, 1}},
		{true, -1, -1, []int64{1}, []int64{1}},
		{true, -1, -1, []int64{3}, nil}, // decided after the set-full group
		{true, -1, -1, []int64{2}, []int64{2, 2}},
		{true, -1, -1, []int64{2}, []int64{2}},
		{false, -1, 0, []int64{2}, []int64{2, 2}}, // the user's set is full
		{false, 0, -1, []int64{2}, []int64{2}},    // the counter is full
		{false, -1, 0, []int64{2}, []int64{2, 2}},
	}
	for i, p := range checks {
		w := wants[i]
		if p.err != nil || p.res.Allowed != w.allowed || p.res.Denied != w.denied || p.deniedSlot != w.deniedSlot ||
			!slices.Equal(p.res.Counts, w.counts) || !slices.Equal(p.inFlight, w.inFlight) {
			t.Errorf("check %d: %+v deniedSlot %d inFlight %v, %v; want %+v", i, p.res, p.deniedSlot, p.inFlight, p.err, w)
		}
	}
	for key, want := range map[string][]string{
		setFullSlots[0].Key:     {"m0", "m3"},
		setFullSlots[1].Key:     {"m0", "m3"},
		counterFullSlots[0].Key: {"m1", "m4"},
	} {
		got, err := c.ZRange(context.Background(), key, 0, -1).Result()
		slices.Sort(got)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("set %s holds %v, %v; want %v", key, got, err, want)
		}
	}
	if got := rawCount(t, c, setFull[0].Key); got != 3 {
		t.Errorf("user 1's counter %d, want 3 (two acquisitions and the plain check)", got)
	}
}

// TestRedisSlotsDeadInstance: the places of an instance that stopped
// without releasing come back within the lease length; those of a live
// instance, renewed, do not expire however long its requests run.
func TestRedisSlotsDeadInstance(t *testing.T) {
	c, keys := singleClient(t)
	short := LeaseConfig{Lease: time.Second, Renew: 200 * time.Millisecond, ReleaseDelay: time.Millisecond}
	live := newRedisAcquirer(t, c, fastLeases)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1}}

	dead := NewRedis(c, WithLeases(short))
	if res, _ := acquire(t, dead, nil, ss); !res.Allowed {
		t.Fatalf("first acquisition: %+v", res)
	}
	acquired := time.Now()
	dead.Close() // stops renewing; the lease is never released
	if res, _ := acquire(t, live, nil, ss); res.Allowed {
		t.Fatal("admitted while the dead instance's lease runs")
	}
	var back *Lease
	testutil.WaitFor(t, 3*time.Second, func() error {
		res, l := acquire(t, live, nil, ss)
		if !res.Allowed {
			return errors.New("the dead instance's place is still taken")
		}
		back = l
		return nil
	})
	if d := time.Since(acquired); d > short.Lease+500*time.Millisecond {
		t.Errorf("place came back after %v, lease %v", d, short.Lease)
	}
	back.Release()
	testutil.WaitFor(t, 2*time.Second, func() error {
		if n := rawHeld(t, c, ss[0].Key); n != 0 {
			return fmt.Errorf("set holds %d", n)
		}
		return nil
	})

	// A live instance with the same short lease keeps its place for 3
	// lease lengths.
	alive := newRedisAcquirer(t, c, short)
	_, held := acquire(t, alive, nil, ss)
	time.Sleep(3 * short.Lease)
	if res, _ := acquire(t, live, nil, ss); res.Allowed || res.DeniedSlot != 0 {
		t.Fatalf("after 3 lease lengths: %+v; want the renewed lease to hold its place", res)
	}
	score, err := c.ZScore(context.Background(), ss[0].Key, held.member).Result()
	if err != nil {
		t.Fatalf("the renewed member: %v", err)
	}
	if left := time.Duration(int64(score)-redisNow(t, c).UnixMilli()) * time.Millisecond; left < short.Lease-2*short.Renew {
		t.Fatalf("the renewed lease ends in %v, want about %v", left, short.Lease)
	}
	ttl := c.PTTL(context.Background(), ss[0].Key).Val()
	// The clock read after PTTL: the deadline is at most this far ahead.
	untilDeadline := time.Duration(int64(score)-redisNow(t, c).UnixMilli()) * time.Millisecond
	if ttl < untilDeadline || ttl > 2*short.Lease {
		t.Fatalf("set PTTL %v, want an expiry after the lease's deadline and within 2 lease lengths (lease %v)", ttl, short.Lease)
	}
	held.Release()
}

// pipeCounter is a go-redis hook counting commands by name, and the
// pipelines that carry a ZREM.
type pipeCounter struct {
	mu        sync.Mutex
	pipelines int
	cmds      map[string]int
}

func (h *pipeCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *pipeCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.cmds[strings.ToLower(cmd.Name())]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *pipeCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		zrem := false
		for _, cmd := range cmds {
			name := strings.ToLower(cmd.Name())
			h.cmds[name]++
			zrem = zrem || name == "zrem"
		}
		if zrem {
			h.pipelines++
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *pipeCounter) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pipelines, h.cmds = 0, map[string]int{}
}

func (h *pipeCounter) get() (int, map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pipelines, maps.Clone(h.cmds)
}

// TestRedisReleasesBatched: releases made within ReleaseDelay go out as
// one pipeline with one ZREM per set.
func TestRedisReleasesBatched(t *testing.T) {
	c, keys := singleClient(t)
	hook := &pipeCounter{cmds: map[string]int{}}
	c.AddHook(hook)
	r := newRedisAcquirer(t, c, LeaseConfig{ReleaseDelay: 300 * time.Millisecond})
	var leases []*Lease
	for uid := range int64(2) {
		for range 10 {
			_, l := acquire(t, r, nil, []Slot{{Key: keys.UserSlots(uid), Limit: 10}})
			leases = append(leases, l)
		}
	}
	hook.reset()
	for _, l := range leases {
		l.Release()
	}
	for uid := range int64(2) {
		testutil.WaitFor(t, 2*time.Second, func() error {
			if n := rawHeld(t, c, keys.UserSlots(uid)); n != 0 {
				return fmt.Errorf("user %d's set holds %d", uid, n)
			}
			return nil
		})
	}
	pipes, cmds := hook.get()
	if pipes != 1 || cmds["zrem"] != 2 {
		t.Fatalf("%d pipelines with ZREM, commands %v; want 1 pipeline with 2 ZREM (one per set) for 20 releases", pipes, cmds)
	}
}

// TestRedisReleaseRetried: releases made while Redis hangs are sent when
// it answers again.
func TestRedisReleaseRetried(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	keys := Keys{Prefix: "retry:"}
	r := newRedisAcquirer(t, c, LeaseConfig{ReleaseDelay: time.Millisecond, Timeout: 100 * time.Millisecond})
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 5}}
	var leases []*Lease
	for range 3 {
		_, l := acquire(t, r, nil, ss)
		leases = append(leases, l)
	}
	srv.Pause()
	for _, l := range leases {
		l.Release()
	}
	if got := r.InFlight(); got != 0 {
		t.Errorf("InFlight %d after the releases, want 0", got)
	}
	time.Sleep(time.Second) // several sends time out
	srv.Resume()
	testutil.WaitFor(t, 3*time.Second, func() error {
		if n := rawHeld(t, c, ss[0].Key); n != 0 {
			return fmt.Errorf("set holds %d after Redis came back", n)
		}
		return nil
	})
}

// TestRedisReleaseRetriesEnd: a release that cannot be sent is retried,
// and dropped once its lease has expired in Redis anyway.
func TestRedisReleaseRetriesEnd(t *testing.T) {
	srv := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	hook := &pipeCounter{cmds: map[string]int{}}
	c.AddHook(hook)
	cfg := LeaseConfig{Lease: 500 * time.Millisecond, ReleaseDelay: time.Millisecond, Timeout: 50 * time.Millisecond}
	r := newRedisAcquirer(t, c, cfg)
	_, lease := acquire(t, r, nil, []Slot{{Key: Keys{Prefix: "expire:"}.UserSlots(1), Limit: 1}})
	srv.Pause()
	defer srv.Resume()
	lease.Release()
	time.Sleep(cfg.Lease + 200*time.Millisecond)
	tries, _ := hook.get()
	time.Sleep(10 * cfg.retryDelay())
	if again, _ := hook.get(); again != tries || tries < 2 {
		t.Fatalf("%d release sends within the lease, %d after it expired; want several, then none", tries, again-tries)
	}
}

// loseAnswer is a go-redis hook that lets the first EVALSHA run in Redis
// and then reports it failed, as when a reply is lost to a timeout.
type loseAnswer struct{ lost atomic.Bool }

func (h *loseAnswer) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *loseAnswer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && strings.EqualFold(cmd.Name(), "evalsha") && h.lost.CompareAndSwap(false, true) {
			err = errors.New("i/o timeout (lost by the test)")
			cmd.SetErr(err)
		}
		return err
	}
}

func (h *loseAnswer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRedisLostAnswerReleased: an acquisition that Redis carried out but
// whose answer its caller never got gives its places back on its own.
func TestRedisLostAnswerReleased(t *testing.T) {
	c, keys := singleClient(t)
	r := newRedisAcquirer(t, c, fastLeases)
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	hook := &loseAnswer{}
	c.AddHook(hook)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1}, {Key: keys.ZoneUserSlots("z", 1), Limit: 1}}
	_, lease, err := r.CheckAcquire(context.Background(), nil, ss)
	if !errors.Is(err, ErrUnavailable) || lease != nil || !hook.lost.Load() {
		t.Fatalf("CheckAcquire with its answer lost: %v, %v; want ErrUnavailable", lease, err)
	}
	for _, s := range ss {
		testutil.WaitFor(t, 2*time.Second, func() error {
			if n := rawHeld(t, c, s.Key); n != 0 {
				return fmt.Errorf("set %s holds %d", s.Key, n)
			}
			return nil
		})
	}
	if got := r.InFlight(); got != 0 {
		t.Fatalf("InFlight %d, want 0", got)
	}
	if res, lease := acquire(t, r, nil, ss); !res.Allowed {
		t.Fatalf("after the lost answer: %+v; want admitted", res)
	} else {
		lease.Release()
	}
}

func TestRedisSlotsAfterClose(t *testing.T) {
	c, keys := singleClient(t)
	r := NewRedis(c, WithLeases(fastLeases))
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1}}
	_, lease := acquire(t, r, nil, ss)
	r.Close()
	if _, _, err := r.CheckAcquire(context.Background(), nil, ss); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("CheckAcquire after Close: %v; want ErrUnavailable", err)
	}
	if res, err := r.Check(context.Background(), []Counter{userCounter(keys, 1, 5)}); err != nil || !res.Allowed {
		t.Fatalf("Check after Close: %+v, %v", res, err)
	}
	lease.Release() // still sent, once
	testutil.WaitFor(t, 2*time.Second, func() error {
		if n := rawHeld(t, c, ss[0].Key); n != 0 {
			return fmt.Errorf("set holds %d after a release past Close", n)
		}
		return nil
	})
}

func TestGuardedSlots(t *testing.T) {
	srv := redistest.StartServer(t)
	g, _ := guardedOn(t, srv, 100*time.Millisecond, WithProbeInterval(time.Hour))
	t.Cleanup(func() { g.inner.(*Redis).Close() })
	keys := Keys{Prefix: "guarded:"}
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1}}
	res, lease, err := g.CheckAcquire(context.Background(), nil, ss)
	if err != nil || !res.Allowed {
		t.Fatalf("%+v, %v", res, err)
	}
	if got := g.InFlight(); got != 1 {
		t.Fatalf("InFlight %d, want 1", got)
	}
	held, err := g.PeekSlots(context.Background(), []string{ss[0].Key, keys.UserSlots(2)})
	if err != nil || held[0] != 1 || held[1] != 0 {
		t.Fatalf("PeekSlots %v, %v; want [1 0]", held, err)
	}
	srv.Pause()
	if _, _, err := g.CheckAcquire(context.Background(), nil, ss); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("on a hung Redis: %v", err)
	}
	if !g.Open() {
		t.Fatal("breaker still closed after a timeout")
	}
	if _, _, err := g.CheckAcquire(context.Background(), nil, ss); !errors.Is(err, ErrOpen) {
		t.Fatalf("with the breaker open: %v; want ErrOpen", err)
	}
	lease.Release()
	srv.Resume()
}

func TestRedisSlotsCluster(t *testing.T) {
	c, keys := clusterClient(t)
	cfg := LeaseConfig{Lease: time.Second, Renew: 200 * time.Millisecond, ReleaseDelay: time.Millisecond}
	r := newRedisAcquirer(t, c, cfg)
	other := newRedisAcquirer(t, c, fastLeases)
	redistest.WaitForWindow(t, c, minRemaining)
	var leases []*Lease
	for uid := range int64(20) { // spread over the masters
		cs := []Counter{userCounter(keys, uid, 100)}
		ss := []Slot{{Key: keys.UserSlots(uid), Limit: 1}, {Key: keys.ZoneKeySlots("z", uid, 1), Limit: 1}}
		_, l := acquire(t, r, cs, ss)
		leases = append(leases, l)
	}
	time.Sleep(2 * cfg.Lease) // renewed on every master meanwhile
	for uid := range int64(20) {
		res, _ := acquire(t, other, []Counter{userCounter(keys, uid, 100)}, []Slot{{Key: keys.UserSlots(uid), Limit: 1}})
		if res.Allowed || res.DeniedSlot != 0 || res.Counts[0] != 1 {
			t.Fatalf("user %d: %+v; want refused by the renewed set, counter 1", uid, res)
		}
	}
	for _, l := range leases {
		l.Release()
	}
	for uid := range int64(20) {
		testutil.WaitFor(t, 2*time.Second, func() error {
			res, l := acquire(t, other, nil, []Slot{{Key: keys.UserSlots(uid), Limit: 1}})
			if !res.Allowed {
				return fmt.Errorf("user %d: still refused after the release", uid)
			}
			l.Release()
			return nil
		})
	}
}

// gateFirstScripts is a go-redis hook that holds the first n EVALSHAs
// until open is closed.
type gateFirstScripts struct {
	n    int64
	held atomic.Int64
	open chan struct{}
}

func (h *gateFirstScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateFirstScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "evalsha") && h.held.Add(1) <= h.n {
			<-h.open
		}
		return next(ctx, cmd)
	}
}

func (h *gateFirstScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRedisUnsentAcquisitionNotReleased: an acquisition whose caller left
// while it waited for a script call was never sent, so there is nothing
// to give back and no release goes out for it.
func TestRedisUnsentAcquisitionNotReleased(t *testing.T) {
	c, keys := singleClient(t)
	r := newRedisAcquirer(t, c, fastLeases)
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The first acquisitions go out alone, in loneCalls calls held by the
	// gate (the second of another set, so that its release is a ZREM of its
	// own); the next one queues.
	gate := &gateFirstScripts{n: loneCalls, open: make(chan struct{})}
	counter := &pipeCounter{cmds: map[string]int{}}
	c.AddHook(gate)
	c.AddHook(counter)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 5}}
	out := make(chan *Lease, loneCalls)
	for i := range int64(loneCalls) {
		go func() {
			_, l, err := r.CheckAcquire(context.Background(), nil, []Slot{{Key: keys.UserSlots(1 + i), Limit: 5}})
			if err != nil {
				t.Error(err)
			}
			out <- l
		}()
		testutil.WaitFor(t, 2*time.Second, func() error {
			if gate.held.Load() != i+1 {
				return errors.New("the first acquisitions are not out yet")
			}
			return nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, lease, err := r.CheckAcquire(ctx, nil, ss) // queued behind the first, then left
	cancel()
	if !errors.Is(err, ErrUnavailable) || lease != nil {
		t.Fatalf("queued acquisition whose caller left: %v, %v", lease, err)
	}
	close(gate.open)
	for range loneCalls {
		(<-out).Release()
	}
	testutil.WaitFor(t, 2*time.Second, func() error {
		if n := rawHeld(t, c, ss[0].Key); n != 0 {
			return fmt.Errorf("set holds %d", n)
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond)
	if _, cmds := counter.get(); cmds["evalsha"] != loneCalls || cmds["zrem"] != loneCalls {
		t.Fatalf("commands %v; want %d EVALSHA (the queued acquisition never sent) and %d ZREM (the first ones' releases)", cmds, loneCalls, loneCalls)
	}
}

// The leases held are a linked list: releasing the first, a middle and
// the last one in any order leaves the others renewed and counted.
func TestRedisRenewAfterReleasesInAnyOrder(t *testing.T) {
	c, keys := singleClient(t)
	short := LeaseConfig{Lease: time.Second, Renew: 200 * time.Millisecond, ReleaseDelay: time.Millisecond}
	r := newRedisAcquirer(t, c, short)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 10}}
	leases := make([]*Lease, 6)
	for i := range leases {
		res, l := acquire(t, r, nil, ss)
		if !res.Allowed {
			t.Fatalf("acquisition %d: %+v", i, res)
		}
		leases[i] = l
	}
	// Held newest first: 5 is the list's head, 0 its tail.
	for _, i := range []int{5, 2, 0} {
		leases[i].Release()
	}
	if n := r.InFlight(); n != 3 {
		t.Fatalf("InFlight %d after 3 of 6 released, want 3", n)
	}
	time.Sleep(3 * short.Lease) // the kept ones live only if renewed
	members, err := c.ZRangeArgs(context.Background(), redis.ZRangeArgs{
		Key: ss[0].Key, ByScore: true, Start: "(" + strconv.FormatInt(redisNow(t, c).UnixMilli(), 10), Stop: "+inf",
	}).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{leases[1].member, leases[3].member, leases[4].member}
	slices.Sort(members)
	slices.Sort(want)
	if !slices.Equal(members, want) {
		t.Fatalf("live members %v after 3 lease lengths, want the kept leases %v", members, want)
	}
	for _, i := range []int{3, 1, 4} {
		leases[i].Release()
	}
	if n := r.InFlight(); n != 0 {
		t.Fatalf("InFlight %d after all released", n)
	}
	testutil.WaitFor(t, 2*time.Second, func() error {
		if n := rawHeld(t, c, ss[0].Key); n != 0 {
			return fmt.Errorf("set holds %d after all released", n)
		}
		return nil
	})
}
