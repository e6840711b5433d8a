package limiter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
)

// gatedRun is a batcher run func that records each call and blocks until
// the test opens its gate. It stands in for Redis only to steer timing; the
// script itself is tested against Redis below.
type gatedRun struct {
	gate  chan struct{}
	mu    sync.Mutex
	calls [][]*pendingCheck
}

func newGatedRun() *gatedRun { return &gatedRun{gate: make(chan struct{})} }

func (g *gatedRun) run(ctx context.Context, checks []*pendingCheck) {
	g.mu.Lock()
	g.calls = append(g.calls, checks)
	g.mu.Unlock()
	<-g.gate
	for _, p := range checks {
		p.res = Result{Allowed: true, Denied: -1, Counts: []int64{p.counters[0].Limit}}
	}
}

func (g *gatedRun) callCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}

// waitForCalls waits until g has had n calls.
func waitForCalls(t *testing.T, g *gatedRun, n int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if c := g.callCount(); c != n {
			return fmt.Errorf("%d calls, want %d", c, n)
		}
		return nil
	})
}

func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

func TestBatcherCoalescesWhileCallsAreOut(t *testing.T) {
	g := newGatedRun()
	b := &batcher{run: g.run}
	const queuedChecks = maxBatch + 6
	// The first checks go out alone, in loneCalls calls; the rest queue.
	results := make([]Result, loneCalls+queuedChecks)
	var wg sync.WaitGroup
	check := func(i int) {
		wg.Go(func() {
			res, err := b.check(context.Background(), time.Time{}, []Counter{{Key: "k", Limit: int64(i)}})
			if err != nil {
				t.Errorf("check %d: %v", i, err)
			}
			results[i] = res
		})
	}
	for i := range loneCalls {
		check(i)
		waitForCalls(t, g, i+1)
	}
	for i := loneCalls; i < len(results); i++ {
		check(i)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if b.queued() == queuedChecks {
			return nil
		}
		return errors.New("still waiting for queued checks")
	})
	if n := g.callCount(); n != loneCalls {
		t.Fatalf("%d calls while %d are out, want no more", n, loneCalls)
	}
	close(g.gate)
	wg.Wait()

	// Every check went out in exactly one call and got its own result.
	seen := map[int64]int{}
	for _, call := range g.calls {
		if len(call) > maxBatch {
			t.Errorf("a call carried %d checks, max %d", len(call), maxBatch)
		}
		for _, p := range call {
			seen[p.counters[0].Limit]++
		}
	}
	for i := range results {
		if seen[int64(i)] != 1 {
			t.Errorf("check %d went out %d times, want 1", i, seen[int64(i)])
		}
		if !results[i].Allowed || results[i].Counts[0] != int64(i) {
			t.Errorf("check %d got %+v", i, results[i])
		}
	}
	// The queue drained in ceil(queued/maxBatch) further calls.
	if want := loneCalls + (queuedChecks+maxBatch-1)/maxBatch; len(g.calls) != want {
		t.Errorf("%d calls, want %d", len(g.calls), want)
	}
	// The last drain frees its place just after its callers return.
	testutil.WaitFor(t, 5*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.inFlight != 0 || len(b.queue) != 0 {
			return fmt.Errorf("%d calls in flight, %d checks queued", b.inFlight, len(b.queue))
		}
		return nil
	})
}

// TestBatcherSendsLoneChecksAtOnce: a check that finds only calls of a
// single check out, and nothing queued, goes out at once in a call of its
// own, up to loneCalls; past them, or while a call of several checks is
// out, checks queue, and only the last call out takes the queue.
func TestBatcherSendsLoneChecksAtOnce(t *testing.T) {
	release := make(chan struct{})
	g := &gatedRun{}
	b := &batcher{run: func(ctx context.Context, checks []*pendingCheck) {
		g.mu.Lock()
		g.calls = append(g.calls, checks)
		g.mu.Unlock()
		<-release // one call ends per token
		for _, p := range checks {
			p.res = Result{Allowed: true, Denied: -1}
		}
	}}
	var wg sync.WaitGroup
	check := func() {
		wg.Go(func() {
			if res, err := b.check(context.Background(), time.Time{}, []Counter{{Key: "k", Limit: 1}}); err != nil || !res.Allowed {
				t.Errorf("check: %+v, %v", res, err)
			}
		})
	}
	waitFor := func(calls, queued int) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() error {
			if c, q := g.callCount(), b.queued(); c != calls || q != queued {
				return fmt.Errorf("%d calls and %d checks queued, want %d and %d", c, q, calls, queued)
			}
			return nil
		})
	}
	inFlight := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inFlight
	}

	check()
	waitFor(1, 0)
	check() // the call out carries one check: this one goes out too
	waitFor(2, 0)
	check()
	check()
	check() // loneCalls are out: these queue
	waitFor(2, 3)

	release <- struct{}{} // the first call to end leaves the queue to the other
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := inFlight(); n != 1 {
			return fmt.Errorf("%d calls in flight, want 1", n)
		}
		return nil
	})
	waitFor(2, 3)
	release <- struct{}{} // the last call out sends the queue in one call
	waitFor(3, 0)
	check() // a call of three checks is out: this one queues
	waitFor(3, 1)
	release <- struct{}{}
	waitFor(4, 0)
	release <- struct{}{}
	wg.Wait()
	testutil.WaitFor(t, 5*time.Second, func() error { // the drain frees its place just after its callers return
		if n := inFlight(); n != 0 {
			return fmt.Errorf("%d calls in flight after the last, want 0", n)
		}
		return nil
	})
	if sizes := []int{len(g.calls[2]), len(g.calls[3])}; sizes[0] != 3 || sizes[1] != 1 {
		t.Fatalf("the queued checks went out in calls of %v, want [3 1]", sizes)
	}
}

// TestBatcherQueuesBehindLoneCallsUnderLoad: once calls have carried
// several checks on average, a check queues behind a call of one.
func TestBatcherQueuesBehindLoneCallsUnderLoad(t *testing.T) {
	g := newGatedRun()
	b := &batcher{run: g.run}
	b.mu.Lock()
	for range 8 {
		b.inFlight++ // as do and drain record a call of 4 checks
		b.sent += 4
		if batch := b.ended(4); batch != nil {
			t.Fatalf("an empty queue gave a batch of %d", len(batch))
		}
	}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := b.check(context.Background(), time.Time{}, []Counter{{Key: "k", Limit: 1}}); err != nil {
				t.Error(err)
			}
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if c, q := g.callCount(), b.queued(); c != 1 || q != 1 {
			return fmt.Errorf("%d calls and %d checks queued, want 1 and 1", c, q)
		}
		return nil
	})
	close(g.gate)
	wg.Wait()
	if n := g.callCount(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
}

func TestBatcherQueuedCheckLeavesAtItsDeadline(t *testing.T) {
	g := newGatedRun()
	b := &batcher{run: g.run}
	var wg sync.WaitGroup
	for i := range loneCalls {
		wg.Go(func() {
			if _, err := b.check(context.Background(), time.Time{}, []Counter{{Key: "k", Limit: 1}}); err != nil {
				t.Error(err)
			}
		})
		waitForCalls(t, g, i+1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := b.check(ctx, time.Time{}, []Counter{{Key: "k", Limit: 99}})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || res.Allowed {
		t.Fatalf("got %+v, %v; want ErrUnavailable wrapping the deadline", res, err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Fatalf("waited %v past a 20ms deadline", waited)
	}
	if b.queued() != 0 {
		t.Fatalf("the check that left is still queued")
	}
	close(g.gate)
	wg.Wait()
	for _, call := range g.calls {
		for _, p := range call {
			if p.counters[0].Limit == 99 {
				t.Fatalf("the check that left was sent")
			}
		}
	}
}

// TestBatcherDeadlineKeptByTheCalls gives checks a deadline but no context
// deadline: a call that hangs ends at the earliest deadline of its checks,
// and a check queued behind it ends by its own deadline in the next call.
func TestBatcherDeadlineKeptByTheCalls(t *testing.T) {
	var mu sync.Mutex
	var callDeadlines []time.Time
	b := &batcher{run: func(ctx context.Context, checks []*pendingCheck) {
		d, _ := ctx.Deadline()
		mu.Lock()
		callDeadlines = append(callDeadlines, d)
		mu.Unlock()
		<-ctx.Done() // a hung Redis: the call ends at its deadline
		for _, p := range checks {
			p.fail(ctx.Err())
		}
	}}
	ctx := context.Background()
	start := time.Now()
	first, second := start.Add(60*time.Millisecond), start.Add(120*time.Millisecond)
	// The first checks go out alone, in loneCalls calls; the next queues.
	firstDone := make(chan error, loneCalls)
	for i := range loneCalls {
		go func() {
			_, err := b.check(ctx, first, []Counter{{Key: "k", Limit: 1}})
			firstDone <- err
		}()
		testutil.WaitFor(t, 5*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(callDeadlines) != i+1 {
				return fmt.Errorf("%d calls, want %d", len(callDeadlines), i+1)
			}
			return nil
		})
	}
	_, err := b.check(ctx, second, []Counter{{Key: "k", Limit: 2}})
	ended := time.Now()
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued check: %v, want ErrUnavailable wrapping the deadline", err)
	}
	if ended.Before(second) || ended.Sub(second) > 100*time.Millisecond {
		t.Fatalf("queued check ended %v after its deadline", ended.Sub(second))
	}
	for range loneCalls {
		if err := <-firstDone; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("first check: %v, want the deadline", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []time.Time{first, first, second}; !slices.EqualFunc(callDeadlines, want, time.Time.Equal) {
		t.Fatalf("call deadlines %v, want %v", callDeadlines, want)
	}
}

// TestRedisChecksShareACall runs several checks in one script call against
// Redis: each is decided in order, as if alone, and each counter is read
// and written once.
func TestRedisChecksShareACall(t *testing.T) {
	r, c, keys, hook := scriptedRedis(t)

	withGroup := []Counter{groupCounter(keys, 1, 7, 2), userCounter(keys, 1, 10)}
	userOnly := []Counter{userCounter(keys, 1, 10)}
	other := []Counter{userCounter(keys, 2, 1)}
	checks := []*pendingCheck{
		{counters: withGroup}, {counters: withGroup}, {counters: withGroup},
		{counters: userOnly}, {counters: other}, {counters: other},
	}
	hook.reset()
	r.run(context.Background(), checks)
	if hook.evalsha.Load()+hook.eval.Load() != 1 {
		t.Fatalf("%d script calls, want 1", hook.evalsha.Load()+hook.eval.Load())
	}
	want := []struct {
		allowed bool
		denied  int
		counts  []int64
	}{
		{true, -1, []int64{1, 1}},
		{true, -1, []int64{2, 2}},
		{false, 0, []int64{2, 2}}, // group full; the user counter is not charged
		{true, -1, []int64{3}},
		{true, -1, []int64{1}},
		{false, 0, []int64{1}},
	}
	for i, p := range checks {
		w := want[i]
		if p.err != nil || p.res.Allowed != w.allowed || p.res.Denied != w.denied || !slices.Equal(p.res.Counts, w.counts) {
			t.Errorf("check %d: %+v, %v; want allowed %v, denied %d, counts %v", i, p.res, p.err, w.allowed, w.denied, w.counts)
		}
		checkResetIn(t, p.res.ResetIn)
	}
	for key, n := range map[string]int64{withGroup[0].Key: 2, withGroup[1].Key: 3, other[0].Key: 1} {
		if got := rawCount(t, c, key); got != n {
			t.Errorf("%s = %d, want %d", key, got, n)
		}
		// The expiry is the end of the next window plus the slack (layout.go).
		if ttl := rawTTL(t, c, key); ttl <= Window || ttl > 2*Window+DefaultExpirySlack {
			t.Errorf("%s: ttl %v, want past this window, within the next one plus the slack", key, ttl)
		}
	}
}

// TestRedisIdenticalChecksDecidedTogether: identical checks of a call go
// to the script as one group, with the outcome of as many checks in a row;
// the other checks of the call see the group's increments.
func TestRedisIdenticalChecksDecidedTogether(t *testing.T) {
	r, c, keys, _ := scriptedRedis(t)

	a := []Counter{groupCounter(keys, 1, 7, 3), userCounter(keys, 1, 10)} // the group layer fills first
	b := []Counter{userCounter(keys, 1, 10)}
	u := []Counter{groupCounter(keys, 2, 7, 100), userCounter(keys, 2, 2)} // the user counter fills first
	checks := []*pendingCheck{
		{counters: a}, {counters: b}, {counters: a}, {counters: u}, {counters: a}, {counters: u},
		{counters: b}, {counters: a}, {counters: u}, {counters: a}, {counters: u},
	}
	if groups := groupChecks(checks); len(groups) != 3 || len(groups[0]) != 5 || len(groups[1]) != 2 || len(groups[2]) != 4 {
		t.Fatalf("groups of %d, want a ×5, b ×2, u ×4", len(groups))
	}
	r.run(context.Background(), checks)
	// In check order: a's five are decided first (three fit the group
	// layer), then b's two on top of them, then u's four (two fit the user
	// limit).
	wants := []struct {
		allowed bool
		denied  int
		counts  []int64
	}{
		{true, -1, []int64{1, 1}}, // a
		{true, -1, []int64{4}},    // b
		{true, -1, []int64{2, 2}}, // a
		{true, -1, []int64{1, 1}}, // u
		{true, -1, []int64{3, 3}}, // a
		{true, -1, []int64{2, 2}}, // u
		{true, -1, []int64{5}},    // b
		{false, 0, []int64{3, 3}}, // a: group full
		{false, 1, []int64{2, 2}}, // u: user full
		{false, 0, []int64{3, 3}}, // a
		{false, 1, []int64{2, 2}}, // u
	}
	for i, p := range checks {
		w := wants[i]
		if p.err != nil || p.res.Allowed != w.allowed || p.res.Denied != w.denied || !slices.Equal(p.res.Counts, w.counts) {
			t.Errorf("check %d: %+v, %v; want allowed %v, denied %d, counts %v", i, p.res, p.err, w.allowed, w.denied, w.counts)
		}
	}
	for key, n := range map[string]int64{a[0].Key: 3, a[1].Key: 5, u[0].Key: 2, u[1].Key: 2} {
		if got := rawCount(t, c, key); got != n {
			t.Errorf("%s = %d, want %d", key, got, n)
		}
	}

	// A counter already past its (lowered) limit admits none of a group.
	over := []Counter{userCounter(keys, 1, 4)}
	group := []*pendingCheck{{counters: over}, {counters: over}}
	r.run(context.Background(), group)
	for i, p := range group {
		if p.err != nil || p.res.Allowed || p.res.Denied != 0 || !slices.Equal(p.res.Counts, []int64{5}) {
			t.Errorf("over the limit, check %d: %+v, %v", i, p.res, p.err)
		}
	}
	if got := rawCount(t, c, over[0].Key); got != 5 {
		t.Errorf("a refused group changed the counter to %d", got)
	}
}

// TestRedisConcurrentChecksShareRoundTrips: many concurrent checks against
// Redis take fewer script calls than checks, and every counter is exact.
func TestRedisConcurrentChecksShareRoundTrips(t *testing.T) {
	r, c, keys, hook := scriptedRedis(t)
	hook.reset()

	const users, perUser = 40, 25
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for u := range int64(users) {
		for range perUser {
			wg.Go(func() {
				res, err := r.Check(context.Background(), []Counter{userCounter(keys, u+1, 20)})
				if err != nil {
					t.Error(err)
				} else if res.Allowed {
					admitted.Add(1)
				}
			})
		}
	}
	wg.Wait()
	calls := hook.evalsha.Load() + hook.eval.Load()
	// Other commands are the pool's connection set-up (HELLO, CLIENT
	// SETINFO) for connections opened under the burst.
	if calls == 0 || calls >= users*perUser {
		t.Fatalf("%d script calls for %d checks; want fewer calls than checks", calls, users*perUser)
	}
	t.Logf("%d checks in %d script calls", users*perUser, calls)
	if got := admitted.Load(); got != users*20 {
		t.Fatalf("admitted %d, want %d", got, users*20)
	}
	for u := range int64(users) {
		if got := rawCount(t, c, keys.User(u+1)); got != 20 {
			t.Fatalf("user %d counter = %d, want 20", u+1, got)
		}
	}
}
