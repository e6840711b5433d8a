package limiter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// guardedOn builds Guarded(Redis) against a private server.
func guardedOn(t *testing.T, srv *redistest.Server, timeout time.Duration, opts ...GuardOption) (*Guarded, *observer.ObservedLogs) {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  srv.Addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
	})
	t.Cleanup(func() { c.Close() })
	core, logs := observer.New(zapcore.InfoLevel)
	opts = append([]GuardOption{WithProbe(func(ctx context.Context) error { return c.Ping(ctx).Err() })}, opts...)
	g := NewGuarded(NewRedis(c), timeout, zap.New(core), opts...)
	t.Cleanup(func() { g.Close() })
	return g, logs
}

func TestGuardedBreakerRedisDown(t *testing.T) {
	srv := redistest.StartServer(t)
	var errCount atomic.Int64
	states := make(chan bool, 10)
	const timeout = 300 * time.Millisecond
	g, logs := guardedOn(t, srv, timeout,
		WithOnError(func(error) { errCount.Add(1) }),
		WithOnStateChange(func(open bool) { states <- open }),
	)
	keys := Keys{Prefix: redistest.Prefix(t)}
	cs := []Counter{userCounter(keys, 1, 1000)}
	ctx := context.Background()
	if res, err := g.Check(ctx, cs); err != nil || !res.Allowed {
		t.Fatalf("healthy: %+v, %v", res, err)
	}

	srv.Stop()
	start := time.Now()
	if _, err := g.Check(ctx, cs); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Redis down: err %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > timeout+200*time.Millisecond {
		t.Fatalf("first failure took %v, timeout is %v", d, timeout)
	}
	if !g.Open() {
		t.Fatal("breaker still closed after a failure")
	}
	if open := <-states; !open {
		t.Fatal("state hook: want open")
	}
	var worst time.Duration
	for range 200 {
		start := time.Now()
		_, err := g.Check(ctx, cs)
		if d := time.Since(start); d > worst {
			worst = d
		}
		if !errors.Is(err, ErrOpen) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("open breaker: err %v, want ErrOpen", err)
		}
	}
	if worst > 5*time.Millisecond {
		t.Fatalf("slowest call with the breaker open took %v, want a few µs", worst)
	}
	if _, _, err := g.Peek(ctx, []string{cs[0].Key}); !errors.Is(err, ErrOpen) {
		t.Fatalf("peek with the breaker open: %v", err)
	}
	if res, err := g.Check(ctx, nil); err != nil || !res.Allowed {
		t.Fatalf("no counters need no backend: %+v, %v", res, err)
	}
	time.Sleep(time.Second) // several probes fail meanwhile
	if n := errCount.Load(); n != 1 {
		t.Fatalf("OnError called %d times, want 1 (open-breaker refusals and probes are not backend errors)", n)
	}
	if n := logs.FilterMessage("rate limiter backend failed").Len(); n != 1 {
		t.Fatalf("%d failure warnings, want 1", n)
	}

	back := time.Now()
	srv.Restart()
	for {
		res, err := g.Check(ctx, cs)
		if err == nil && res.Allowed {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("limits not back 5s after Redis returned: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("limits resumed %v after Redis returned", time.Since(back))
	if g.Open() {
		t.Fatal("breaker open after a successful check")
	}
	if open := <-states; open {
		t.Fatal("state hook: want closed")
	}
	if logs.FilterMessage("rate limiter circuit breaker closed").Len() != 1 {
		t.Fatal("no log of the breaker closing")
	}
}

func TestGuardedTimeoutOnHungRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	const timeout = 100 * time.Millisecond
	g, _ := guardedOn(t, srv, timeout)
	keys := Keys{Prefix: redistest.Prefix(t)}
	cs := []Counter{userCounter(keys, 1, 1000)}
	ctx := context.Background()
	if _, err := g.Check(ctx, cs); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	start := time.Now()
	_, err := g.Check(ctx, cs)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("hung Redis: err %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > timeout+150*time.Millisecond {
		t.Fatalf("hung Redis: call took %v, timeout %v", d, timeout)
	}
	start = time.Now()
	if _, err := g.Check(ctx, cs); !errors.Is(err, ErrOpen) || time.Since(start) > 5*time.Millisecond {
		t.Fatalf("after the timeout: err %v in %v, want ErrOpen at once", err, time.Since(start))
	}
	srv.Resume()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if g.Open() {
			return errors.New("breaker still open after Redis resumed")
		}
		return nil
	})
	if res, err := g.Check(ctx, cs); err != nil || !res.Allowed {
		t.Fatalf("after resume: %+v, %v", res, err)
	}
}

// TestGuardedConcurrentChecksOnHungRedis: checks that queue behind a hung
// call (see batch.go) still end within the timeout, each.
func TestGuardedConcurrentChecksOnHungRedis(t *testing.T) {
	srv := redistest.StartServer(t)
	const timeout = 100 * time.Millisecond
	g, _ := guardedOn(t, srv, timeout, WithProbeInterval(time.Hour))
	keys := Keys{Prefix: redistest.Prefix(t)}
	ctx := context.Background()
	if _, err := g.Check(ctx, []Counter{userCounter(keys, 1, 1000)}); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	const callers = 30
	var wg sync.WaitGroup
	var slow, notUnavailable atomic.Int64
	for i := range callers {
		wg.Go(func() {
			start := time.Now()
			_, err := g.Check(ctx, []Counter{userCounter(keys, int64(i+1), 1000)})
			if time.Since(start) > timeout+150*time.Millisecond {
				slow.Add(1)
			}
			if !errors.Is(err, ErrUnavailable) {
				notUnavailable.Add(1)
			}
		})
	}
	wg.Wait()
	if slow.Load() != 0 || notUnavailable.Load() != 0 {
		t.Fatalf("of %d checks on a hung Redis, %d took longer than the timeout (%v) and %d did not fail as unavailable",
			callers, slow.Load(), timeout, notUnavailable.Load())
	}
}

func TestGuardedCallerCancelIsNoBackendFailure(t *testing.T) {
	c, keys := singleClient(t)
	g := NewGuarded(NewRedis(c), time.Second, nil)
	defer g.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Check(ctx, []Counter{userCounter(keys, 1, 10)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled: err %v, want ErrUnavailable", err)
	}
	if g.Open() || g.Errors() != 0 {
		t.Fatalf("a canceled caller opened the breaker (open %v, errors %d)", g.Open(), g.Errors())
	}
}

// TestGuardedCallersLeavingMidCallOpenNoBreaker: on a hung Redis, callers
// whose context is canceled while their check is out — the first ones in
// calls of their own (loneCalls), the others queued behind them — are no
// backend failure: they count no error, call no error hook and do not
// open the breaker (threshold 1), and the queued ones leave at once. A
// client that hangs up is not a Redis outage.
func TestGuardedCallersLeavingMidCallOpenNoBreaker(t *testing.T) {
	srv := redistest.StartServer(t)
	const timeout = time.Second
	var hooked atomic.Int64
	g, logs := guardedOn(t, srv, timeout, WithProbeInterval(time.Hour),
		WithOnError(func(error) { hooked.Add(1) }))
	keys := Keys{Prefix: redistest.Prefix(t)}
	cs := []Counter{userCounter(keys, 1, 1000)}
	if _, err := g.Check(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
	b := g.inner.(*Redis).batcherFor(context.Background(), time.Time{}, cs[0].Key)

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	const callers = 8
	ctx, cancel := context.WithCancel(context.Background())
	errs := make([]error, callers)
	ended := make([]time.Time, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			_, errs[i] = g.Check(ctx, cs)
			ended[i] = time.Now()
		})
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if b.queued() == callers-loneCalls {
			return nil
		}
		return errors.New("still waiting for the lone calls out and the rest queued")
	})
	canceled := time.Now()
	cancel()
	wg.Wait()
	var atOnce int
	for i, err := range errs {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("caller %d: err %v, want ErrUnavailable", i, err)
		}
		if ended[i].Sub(canceled) < timeout/4 {
			atOnce++
		}
	}
	// The queued ones leave at once; those whose call is out may wait for
	// it (the call ends by the timeout at the latest).
	if atOnce < callers-loneCalls {
		t.Errorf("%d of %d queued callers left at once", atOnce, callers-loneCalls)
	}
	if g.Open() || g.Errors() != 0 || hooked.Load() != 0 {
		t.Fatalf("callers that left opened the breaker: open %v, errors %d, error hook %d", g.Open(), g.Errors(), hooked.Load())
	}
	if n := logs.FilterMessage("rate limiter backend failed").Len(); n != 0 {
		t.Fatalf("%d backend-failure warnings for callers that left", n)
	}
	srv.Resume()
	resumed = true
	// Still closed: the next check asks Redis and is decided there.
	if res, err := g.Check(context.Background(), cs); err != nil || !res.Allowed || res.Counts[0] < 2 {
		t.Fatalf("after the callers left: %+v, %v; want a Redis decision", res, err)
	}
}

func TestGuardedThresholdAndRateLimitedLogs(t *testing.T) {
	srv := redistest.StartServer(t)
	g, logs := guardedOn(t, srv, 100*time.Millisecond, WithThreshold(5), WithLogInterval(time.Hour))
	srv.Stop()
	keys := Keys{Prefix: redistest.Prefix(t)}
	cs := []Counter{userCounter(keys, 1, 10)}
	for i := range 4 {
		if _, err := g.Check(context.Background(), cs); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) {
			t.Fatalf("failure %d: %v, want a backend error", i+1, err)
		}
	}
	if g.Open() {
		t.Fatal("breaker opened before the threshold")
	}
	if _, err := g.Check(context.Background(), cs); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	if !g.Open() {
		t.Fatal("breaker closed after 5 failures, threshold 5")
	}
	if n := logs.FilterMessage("rate limiter backend failed").Len(); n != 1 {
		t.Fatalf("%d warnings for 5 failures within the log interval, want 1", n)
	}
	if g.Errors() != 5 {
		t.Fatalf("Errors() = %d, want 5", g.Errors())
	}
}

func TestLogLimiter(t *testing.T) {
	l := logLimiter{every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if ok, n := l.allow(t0); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 23 {
		if ok, _ := l.allow(t0.Add(time.Duration(i) * 400 * time.Millisecond)); ok {
			t.Fatalf("line %d logged within the interval", i)
		}
	}
	if ok, n := l.allow(t0.Add(10 * time.Second)); !ok || n != 23 {
		t.Fatalf("after the interval: %v, suppressed %d; want true, 23", ok, n)
	}
	if ok, _ := l.allow(t0.Add(11 * time.Second)); ok {
		t.Fatal("logged again within the interval")
	}
}

func TestGuardedCloseEndsProbe(t *testing.T) {
	srv := redistest.StartServer(t)
	probes := make(chan struct{}, 100)
	g, _ := guardedOn(t, srv, 100*time.Millisecond, WithProbeInterval(20*time.Millisecond), WithProbe(func(ctx context.Context) error {
		probes <- struct{}{}
		return errors.New("still down")
	}))
	srv.Stop()
	keys := Keys{Prefix: redistest.Prefix(t)}
	if _, err := g.Check(context.Background(), []Counter{userCounter(keys, 1, 10)}); err == nil {
		t.Fatal("want an error")
	}
	<-probes
	<-probes
	done := make(chan struct{})
	go func() {
		g.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close did not end the probe")
	}
	for len(probes) > 0 {
		<-probes
	}
	time.Sleep(100 * time.Millisecond)
	if len(probes) != 0 {
		t.Fatal("probe ran after Close")
	}
}
