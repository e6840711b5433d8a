package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrOpen is returned, without asking the backend, while the circuit
// breaker of a Guarded limiter is open. It wraps ErrUnavailable.
var ErrOpen = fmt.Errorf("%w: circuit breaker open", ErrUnavailable)

// Defaults of a Guarded limiter.
const (
	DefaultTimeout       = 100 * time.Millisecond
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultThreshold     = 1
	DefaultLogInterval   = 10 * time.Second
)

// Guarded wraps a backend Limiter with a per-call timeout and a circuit
// breaker.
//
// Every backend call is bounded by the timeout (the backend must honour
// context deadlines; for go-redis set ContextTimeoutEnabled). A failed call
// returns an error wrapping ErrUnavailable. After threshold consecutive
// failures (default 1: one timeout is already one too many to pay on every
// request) the breaker opens: calls return ErrOpen at once, and one
// background goroutine probes the backend every probe interval. The first
// successful probe closes the breaker. A call that fails because the
// caller's own context ended is not counted as a backend failure.
//
// A backend whose servers fail on their own (the masters of a Redis
// Cluster, see partitioner) gets a breaker per server: one master that
// stops answering opens the breaker of its own keys only, and its probe
// asks that master.
//
// Warnings are rate-limited to one per log interval, with the number of
// suppressed ones. Close ends the probe goroutines.
type Guarded struct {
	inner     Limiter
	timeout   time.Duration
	probe     func(context.Context) error
	interval  time.Duration
	threshold int64
	logger    *zap.Logger
	onError   func(error)
	onState   func(open bool)

	whole    circuit       // the whole backend's, or the keys' of no known server
	servers  partitioner   // nil: one breaker, whole
	circuits sync.Map      // server name -> *circuit
	opened   atomic.Int64  // circuits open
	errCount atomic.Uint64 // total backend failures

	errLog, openLog, closeLog logLimiter

	mu     sync.Mutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// circuit is the breaker of one server, or of the whole backend.
type circuit struct {
	server   string // "" for the whole backend
	probe    func(context.Context) error
	open     atomic.Bool
	failures atomic.Int64 // consecutive
}

// partitioner is a backend whose keys live on servers that fail on their
// own.
type partitioner interface {
	// server names the server holding key, looked up by deadline, and
	// returns a probe of it; "" when it is not known.
	server(ctx context.Context, deadline time.Time, key string) (string, func(context.Context) error)
}

// GuardOption configures a Guarded limiter.
type GuardOption func(*Guarded)

// WithProbe sets the health check run while the breaker is open (e.g. a
// Redis PING). The default is inner.Peek with no keys, which for Redis reads
// the server clock. The breaker of one server of a partitioned backend
// probes that server instead.
func WithProbe(probe func(context.Context) error) GuardOption {
	return func(g *Guarded) { g.probe = probe }
}

// WithProbeInterval sets how often the open breaker probes (default
// DefaultProbeInterval).
func WithProbeInterval(d time.Duration) GuardOption {
	return func(g *Guarded) {
		if d > 0 {
			g.interval = d
		}
	}
}

// WithThreshold sets how many consecutive failures open the breaker
// (default DefaultThreshold).
func WithThreshold(n int) GuardOption {
	return func(g *Guarded) {
		if n > 0 {
			g.threshold = int64(n)
		}
	}
}

// WithLogInterval sets the minimum time between two warnings of one kind
// (default DefaultLogInterval).
func WithLogInterval(d time.Duration) GuardOption {
	return func(g *Guarded) {
		g.errLog.every = d
		g.openLog.every = d
		g.closeLog.every = d
	}
}

// WithOnError sets a hook called on every backend failure (not on calls
// refused by the open breaker), e.g. to count Redis errors in metrics.
func WithOnError(f func(error)) GuardOption {
	return func(g *Guarded) { g.onError = f }
}

// WithOnStateChange sets a hook called when a breaker (the whole
// backend's or one server's) opens (true) or closes (false).
func WithOnStateChange(f func(open bool)) GuardOption {
	return func(g *Guarded) { g.onState = f }
}

// NewGuarded wraps inner. A timeout <= 0 means DefaultTimeout; a nil logger
// logs nothing.
func NewGuarded(inner Limiter, timeout time.Duration, logger *zap.Logger, opts ...GuardOption) *Guarded {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	g := &Guarded{
		inner:     inner,
		timeout:   timeout,
		interval:  DefaultProbeInterval,
		threshold: DefaultThreshold,
		logger:    logger,
		errLog:    logLimiter{every: DefaultLogInterval},
		openLog:   logLimiter{every: DefaultLogInterval},
		closeLog:  logLimiter{every: DefaultLogInterval},
	}
	for _, o := range opts {
		o(g)
	}
	if g.probe == nil {
		g.probe = func(ctx context.Context) error {
			_, _, err := inner.Peek(ctx, nil)
			return err
		}
	}
	g.whole.probe = g.probe
	g.servers, _ = inner.(partitioner)
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// circuitFor returns the breaker of the server holding key.
func (g *Guarded) circuitFor(ctx context.Context, deadline time.Time, key string) *circuit {
	if g.servers == nil {
		return &g.whole
	}
	name, probe := g.servers.server(ctx, deadline, key)
	if name == "" {
		return &g.whole
	}
	if c, ok := g.circuits.Load(name); ok {
		return c.(*circuit)
	}
	c, _ := g.circuits.LoadOrStore(name, &circuit{server: name, probe: probe})
	return c.(*circuit)
}

// keysCircuit is circuitFor the first of keys, or the whole backend's for
// none.
func (g *Guarded) keysCircuit(ctx context.Context, deadline time.Time, keys []string) *circuit {
	if len(keys) == 0 {
		return &g.whole
	}
	return g.circuitFor(ctx, deadline, keys[0])
}

// Check implements Limiter.
func (g *Guarded) Check(ctx context.Context, counters []Counter) (Result, error) {
	if len(counters) == 0 {
		return Result{Allowed: true, Denied: -1}, nil
	}
	now := time.Now()
	deadline := now.Add(g.timeout)
	c := g.circuitFor(ctx, deadline, counters[0].Key)
	if c.open.Load() {
		return Result{Denied: -1}, ErrOpen
	}
	res, err := g.check(ctx, now, deadline, counters)
	if err != nil {
		return Result{Denied: -1}, g.fail(ctx, c, err)
	}
	c.succeed()
	return res, nil
}

// deadlineChecker is a Limiter that can bound a check by a deadline more
// cheaply than a context timer per request (Redis: see batch.go). now is
// the caller's reading of the clock, from which deadline was set: reading
// it costs tens of nanoseconds on some hosts, and the check needs it too.
type deadlineChecker interface {
	checkBy(ctx context.Context, now, deadline time.Time, counters []Counter) (Result, error)
}

// check asks the backend, bounded by deadline.
func (g *Guarded) check(ctx context.Context, now, deadline time.Time, counters []Counter) (Result, error) {
	if dc, ok := g.inner.(deadlineChecker); ok {
		return dc.checkBy(ctx, now, deadline, counters)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return g.inner.Check(cctx, counters)
}

// Peek implements Limiter.
func (g *Guarded) Peek(ctx context.Context, keys []string) ([]int64, time.Duration, error) {
	deadline := time.Now().Add(g.timeout)
	c := g.keysCircuit(ctx, deadline, keys)
	if c.open.Load() {
		return nil, 0, ErrOpen
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	counts, reset, err := g.inner.Peek(cctx, keys)
	cancel()
	if err != nil {
		return nil, 0, g.fail(ctx, c, err)
	}
	c.succeed()
	return counts, reset, nil
}

// Reserved implements Limiter. It asks no backend, so it answers while
// the breaker is open too.
func (g *Guarded) Reserved(keys []string) []int64 { return g.inner.Reserved(keys) }

// Forget implements Limiter.
func (g *Guarded) Forget(userID, groupID int64) { g.inner.Forget(userID, groupID) }

// Open reports whether a breaker is open: the whole backend's, or one
// server's.
func (g *Guarded) Open() bool { return g.opened.Load() > 0 }

// Errors returns the total number of backend failures seen.
func (g *Guarded) Errors() uint64 { return g.errCount.Load() }

// Close stops the probe goroutine, if any, and waits for it. The breaker
// stays in its current state.
func (g *Guarded) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	return nil
}

func (c *circuit) succeed() {
	if c.failures.Load() != 0 {
		c.failures.Store(0)
	}
}

// fail records a backend failure on circuit c and returns the error to
// hand back.
func (g *Guarded) fail(ctx context.Context, c *circuit, err error) error {
	if !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if ctx.Err() != nil {
		// The caller gave up; that says nothing about the backend.
		return err
	}
	g.errCount.Add(1)
	if g.onError != nil {
		g.onError(err)
	}
	if ok, suppressed := g.errLog.allow(time.Now()); ok {
		g.logger.Warn("rate limiter backend failed", zap.Error(err), zap.Int("suppressed", suppressed))
	}
	if c.failures.Add(1) >= g.threshold && c.open.CompareAndSwap(false, true) {
		g.opened.Add(1)
		g.tripped(c)
	}
	return err
}

// tripped starts the probe after circuit c opened.
func (g *Guarded) tripped(c *circuit) {
	if ok, suppressed := g.openLog.allow(time.Now()); ok {
		g.logger.Warn("rate limiter circuit breaker opened", c.serverField(), zap.Duration("probe_interval", g.interval), zap.Int("suppressed", suppressed))
	}
	if g.onState != nil {
		g.onState(true)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.wg.Add(1)
	go g.probeLoop(c)
}

// serverField names the circuit's server in a log line (none for the
// whole backend's).
func (c *circuit) serverField() zap.Field {
	if c.server == "" {
		return zap.Skip()
	}
	return zap.String("server", c.server)
}

func (g *Guarded) probeLoop(c *circuit) {
	defer g.wg.Done()
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(g.ctx, g.timeout)
		err := c.probe(pctx)
		cancel()
		if err != nil {
			continue
		}
		c.failures.Store(0)
		c.open.Store(false)
		g.opened.Add(-1)
		if ok, suppressed := g.closeLog.allow(time.Now()); ok {
			g.logger.Info("rate limiter circuit breaker closed", c.serverField(), zap.Int("suppressed", suppressed))
		}
		if g.onState != nil {
			g.onState(false)
		}
		return
	}
}

// logLimiter lets one log line through per interval and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many were suppressed since the
// last line logged.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}
