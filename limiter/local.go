package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Local is an in-process Limiter with the same semantics as Redis, for a
// single instance. Windows are the minutes of the injected clock. Counters
// of past windows are swept on the first call of each new window, so no
// goroutine is needed.
type Local struct {
	now func() time.Time

	mu     sync.Mutex
	counts map[string]localCount
	swept  int64            // window of the last sweep
	slots  map[string]int64 // slot set key -> requests held (slots_local.go)
	held   atomic.Int64     // leases not yet released
}

type localCount struct {
	window int64
	n      int64
}

// NewLocal returns an in-process limiter; now defaults to time.Now.
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, counts: make(map[string]localCount), slots: make(map[string]int64)}
}

// window returns the current window number and the time left in it.
func (l *Local) window() (int64, time.Duration) {
	ms := l.now().UnixMilli()
	w := floorDiv(ms, Window.Milliseconds())
	return w, time.Duration((w+1)*Window.Milliseconds()-ms) * time.Millisecond
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Check implements Limiter.
func (l *Local) Check(_ context.Context, counters []Counter) (Result, error) {
	if len(counters) == 0 {
		return Result{Allowed: true, Denied: -1}, nil
	}
	res, _ := l.acquire(counters, nil)
	return res.Result, nil
}

// Peek implements Limiter.
func (l *Local) Peek(_ context.Context, keys []string) ([]int64, time.Duration, error) {
	w, reset := l.window()
	counts := make([]int64, len(keys))
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, k := range keys {
		if e, ok := l.counts[k]; ok && e.window == w {
			counts[i] = e.n
		}
	}
	return counts, reset, nil
}

// Reserved implements Limiter; Local reserves nothing: all 0.
func (l *Local) Reserved(keys []string) []int64 { return make([]int64, len(keys)) }

// Forget implements Limiter; Local keeps no deny entries.
func (l *Local) Forget(userID, groupID int64) {}

// Sweep drops counters of past windows.
func (l *Local) Sweep() {
	w, _ := l.window()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.swept = w - 1
	l.sweepLocked(w)
}

// Len returns the number of counters held, current or not yet swept.
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.counts)
}

func (l *Local) sweepLocked(w int64) {
	if w == l.swept {
		return
	}
	l.swept = w
	for k, e := range l.counts {
		if e.window != w {
			delete(l.counts, k)
		}
	}
}
