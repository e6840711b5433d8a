package keyfilter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Source streams the SHA-256 of every valid key from the store, all from one
// consistent view of it: it calls sized once with the number of keys before
// the first add, then add for every key. The pointer given to add is valid
// only during the call.
type Source func(ctx context.Context, sized func(n int), add func(hash *[32]byte)) error

// Defaults of Config.
const (
	// DefaultRefresh is the period of the rebuilds. A Bloom filter cannot
	// forget, so deleted keys stay "maybe present" (harmless: they take the
	// usual path and are refused there) until the next build, which also
	// resizes the filter to the key count and re-reads every key in case a
	// notification was missed.
	DefaultRefresh = 5 * time.Minute
	// DefaultTimeout bounds one build.
	DefaultTimeout = 2 * time.Minute
)

const (
	retryMin = time.Second
	retryMax = 30 * time.Second
	// maxPending bounds the keys remembered while a build streams (2 MiB);
	// a build that saw more is discarded and retried.
	maxPending = 1 << 16
)

// Config configures a Filter.
type Config struct {
	// Source reads every key. Required.
	Source Source
	// Refresh is the period of the rebuilds started by Start, spread by
	// ±10 %. Default: DefaultRefresh.
	Refresh time.Duration
	// Timeout bounds one build. Default: DefaultTimeout.
	Timeout time.Duration
	// Logger receives build results; nil logs nothing.
	Logger *zap.Logger
	// OnBuild, if set, is called after every build with its error.
	OnBuild func(err error)
}

// Filter is the set of valid keys of one store, as a Bloom filter that is
// built from the store, kept current with Add as keys are created, and
// rebuilt from time to time. Until its first build has succeeded it admits
// every key. All methods are safe for concurrent use; MayContain takes no
// lock. The methods of a nil *Filter admit everything and do nothing.
type Filter struct {
	cfg Config
	cur atomic.Pointer[Bloom]

	buildMu sync.Mutex // one build at a time

	// mu orders Add against the end of a build, so a key is either in the
	// pending list the build applies or added to the filter it installed.
	mu        sync.Mutex
	keys      int // keys put into cur, by its build and by Add since
	recording bool
	pending   [][32]byte
	overflow  bool

	wake chan struct{}
	done chan struct{}
}

// New returns a filter that admits every key until Build succeeds.
func New(cfg Config) *Filter {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Filter{cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// MayContain reports whether the key whose SHA-256 is h may be valid: false
// only if a build has succeeded and h was neither in the store then nor
// added since.
func (f *Filter) MayContain(h *[32]byte) bool {
	if f == nil {
		return true
	}
	b := f.cur.Load()
	return b == nil || b.MayContain(h)
}

// Ready reports whether a build has succeeded, i.e. whether MayContain can
// answer false.
func (f *Filter) Ready() bool { return f != nil && f.cur.Load() != nil }

// Add records a key created (or changed) in the store. It reaches the
// current filter at once and the one a running build will install.
func (f *Filter) Add(h *[32]byte) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.recording {
		if len(f.pending) < maxPending {
			f.pending = append(f.pending, *h)
		} else {
			f.overflow = true
		}
	}
	b := f.cur.Load()
	if b == nil {
		return
	}
	b.Add(h)
	f.keys++
	if f.keys > b.Capacity() {
		// Past its capacity the false-positive rate climbs; a new build
		// sizes the filter for the new count.
		f.Rebuild()
	}
}

// Rebuild asks the goroutine of Start for a build. Requests made while one
// is already waiting are merged into it.
func (f *Filter) Rebuild() {
	if f == nil {
		return
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Build reads every key from the source into a new filter and installs it.
// Keys added while it reads reach the new filter too. On error the current
// filter stays (or, before the first success, every key stays admitted).
func (f *Filter) Build(ctx context.Context) error {
	if f.cfg.Source == nil {
		return ErrNoSource
	}
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	start := time.Now()

	// Record Adds from before the source's view is taken: a key committed
	// after that view was taken is missing from the stream, but its
	// notification comes after this point.
	f.mu.Lock()
	f.recording, f.pending, f.overflow = true, nil, false
	f.mu.Unlock()

	var b *Bloom
	n := 0
	err := f.cfg.Source(ctx, func(count int) {
		if b == nil {
			b = NewBloom(Capacity(count))
		}
	}, func(h *[32]byte) {
		if b == nil { // a source that did not report its size
			b = NewBloom(MinCapacity)
		}
		b.Add(h)
		n++
	})

	f.mu.Lock()
	pending, overflow := f.pending, f.overflow
	f.recording, f.pending, f.overflow = false, nil, false
	if err == nil && overflow {
		err = fmt.Errorf("more than %d keys were added while it read the store", maxPending)
	}
	if err == nil {
		if b == nil {
			b = NewBloom(Capacity(0))
		}
		for i := range pending {
			b.Add(&pending[i])
		}
		f.cur.Store(b)
		f.keys = n + len(pending)
		if f.keys > b.Capacity() {
			f.Rebuild()
		}
	}
	f.mu.Unlock()

	if f.cfg.OnBuild != nil {
		f.cfg.OnBuild(err)
	}
	if err != nil {
		err = fmt.Errorf("build key filter: %w", err)
		f.cfg.Logger.Warn("key filter build failed; the previous filter stays", zap.Error(err))
		return err
	}
	f.cfg.Logger.Debug("key filter built", zap.Int("keys", n), zap.Int("added_meanwhile", len(pending)),
		zap.Int("capacity", b.Capacity()), zap.Int("bytes", b.Bytes()), zap.Duration("took", time.Since(start)))
	return nil
}

// Start runs the builds in a goroutine until ctx ends: one after every
// Rebuild, one every Refresh, and retries of a failed build (after 1 s,
// doubling up to 30 s). It does not build at once: the owner calls Rebuild
// once the notifications that feed Add are flowing, since a build that read
// the store before then could miss a key created in between.
func (f *Filter) Start(ctx context.Context) {
	go f.run(ctx)
}

// Done is closed when the goroutine of Start has ended.
func (f *Filter) Done() <-chan struct{} { return f.done }

func (f *Filter) run(ctx context.Context) {
	defer close(f.done)
	timer := time.NewTimer(f.refresh())
	defer timer.Stop()
	retry := retryMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-timer.C:
		}
		err := f.Build(ctx)
		if ctx.Err() != nil {
			return
		}
		next := f.refresh()
		if err != nil {
			next, retry = retry, min(2*retry, retryMax)
		} else {
			retry = retryMin
		}
		timer.Reset(next)
	}
}

// refresh is Refresh spread by ±10 %, so instances started together do not
// scan the store together.
func (f *Filter) refresh() time.Duration {
	return time.Duration(float64(f.cfg.Refresh) * (0.9 + 0.2*rand.Float64()))
}

// ErrNoSource reports a Filter configured without a Source.
var ErrNoSource = errors.New("key filter: no source")
