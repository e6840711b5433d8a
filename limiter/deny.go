package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDenyEntries bounds the number of entries of a DenyCache.
const DefaultDenyEntries = 1 << 16

// DenyCache wraps a Limiter and remembers, until the end of the window,
// counters the backend reported full. A later request that includes a
// remembered counter is refused locally (Result.Local) without a backend
// call. A remembered counter refuses only requests whose limit for it is at
// most the count seen full, so a raised limit goes to the backend at once;
// Forget drops entries on invalidation.
//
// With no entries, Check costs one atomic load on top of the inner call;
// with entries, one lock-free map lookup per counter.
type DenyCache struct {
	inner Limiter
	now   func() time.Time
	max   int64

	size   atomic.Int64 // number of entries in m
	latest atomic.Int64 // max until of all entries, unix ns
	m      sync.Map     // counter key -> *denyEntry
}

type denyEntry struct {
	until           time.Time // the entry holds until then
	reset           time.Time // the window's end
	count           int64     // the counter's count when refused (>= its limit)
	userID, groupID int64
	snap            *denySnapshot
	// hold is how long after until the entry still refuses while one
	// request rechecks with the backend (0 for an entry held to the
	// window's end); rechecking is set once a request has claimed that.
	hold       time.Duration
	rechecking atomic.Bool
}

// expires is when the entry stops refusing, recheck or not.
func (e *denyEntry) expires() time.Time { return e.until.Add(e.hold) }

// denyClaim is a lapsed entry whose recheck a request has claimed.
type denyClaim struct {
	key   string
	entry *denyEntry
}

// denySnapshot holds the counts of all counters of the refused request, to
// answer a local refusal with the best counts known.
type denySnapshot struct {
	keys   []string
	counts []int64
}

func (s *denySnapshot) count(key string) int64 {
	for i, k := range s.keys {
		if k == key {
			return s.counts[i]
		}
	}
	return 0
}

// DenyOption configures a DenyCache.
type DenyOption func(*DenyCache)

// WithMaxEntries bounds the number of remembered counters (default
// DefaultDenyEntries).
func WithMaxEntries(n int) DenyOption {
	return func(d *DenyCache) {
		if n > 0 {
			d.max = int64(n)
		}
	}
}

// NewDenyCache wraps inner; now defaults to time.Now.
func NewDenyCache(inner Limiter, now func() time.Time, opts ...DenyOption) *DenyCache {
	if now == nil {
		now = time.Now
	}
	d := &DenyCache{inner: inner, now: now, max: DefaultDenyEntries}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Check implements Limiter.
func (d *DenyCache) Check(ctx context.Context, counters []Counter) (Result, error) {
	if len(counters) == 0 {
		return Result{Allowed: true, Denied: -1}, nil
	}
	var claim *denyClaim
	if d.size.Load() > 0 {
		res, c, ok := d.local(counters)
		if ok {
			return res, nil
		}
		claim = c
	}
	start := d.now()
	res, err := d.inner.Check(ctx, counters)
	d.settle(start, claim, counters, err == nil && !res.Allowed, res)
	return res, err
}

// settle records the backend's answer to a check the cache let through,
// started at start: a refusal is remembered, and the recheck the check
// claimed (if any) ends — its entry renewed by remember or dropped, so
// the requests that waited for it go to the backend again.
func (d *DenyCache) settle(start time.Time, claim *denyClaim, counters []Counter, refused bool, res Result) {
	if refused && !res.Local && res.ResetIn > 0 && len(res.Counts) == len(counters) {
		d.remember(start, rememberFor(res), res.ResetIn, counters, res.Counts)
	}
	if claim != nil {
		d.delete(claim.key, claim.entry)
	}
}

// rememberFor is how long a refusal holds: to the end of the window, or
// less when reserved units may come back (Result.RecheckIn).
func rememberFor(res Result) time.Duration {
	if res.RecheckIn > 0 && res.RecheckIn < res.ResetIn {
		return res.RecheckIn
	}
	return res.ResetIn
}

// local answers a refusal from the cache if a counter of the request is
// remembered full. An entry held for less than the window (RecheckIn)
// lets one request recheck with the backend once it lapses: the first to
// find it so claims it (returned, to drop it once answered) and goes on,
// and the others are still refused here until that answer renews or drops
// the entry, for at most hold — so a counter whose units may have come
// back costs the backend one check per recheck, not one per request that
// arrives while it is out.
func (d *DenyCache) local(counters []Counter) (Result, *denyClaim, bool) {
	now := d.now()
	if now.UnixNano() >= d.latest.Load() {
		d.sweep(now)
		return Result{}, nil, false
	}
	var claim *denyClaim
	for i, c := range counters {
		v, ok := d.m.Load(c.Key)
		if !ok {
			continue
		}
		e := v.(*denyEntry)
		if !now.Before(e.expires()) || c.Limit > e.count {
			continue
		}
		if !now.Before(e.until) && !e.rechecking.Load() {
			if claim == nil && e.rechecking.CompareAndSwap(false, true) {
				claim = &denyClaim{c.Key, e}
			}
			continue
		}
		if claim != nil {
			claim.entry.rechecking.Store(false) // refused here after all
		}
		counts := make([]int64, len(counters))
		for j, cj := range counters {
			counts[j] = e.snap.count(cj.Key)
		}
		counts[i] = e.count
		return Result{Counts: counts, Denied: i, ResetIn: e.reset.Sub(now), Local: true}, nil, true
	}
	return Result{}, claim, false
}

// remember stores every full counter of a request refused by a check
// started at start, for holdFor (rememberFor) and never past the end of
// its window, resetIn on.
func (d *DenyCache) remember(start time.Time, holdFor, resetIn time.Duration, counters []Counter, counts []int64) {
	until, reset := start.Add(holdFor), start.Add(resetIn)
	snap := &denySnapshot{keys: make([]string, len(counters)), counts: counts}
	for i, c := range counters {
		snap.keys[i] = c.Key
	}
	// A recheck may hold the others as long again, never past the window.
	hold := min(holdFor, reset.Sub(until))
	for u := until.Add(hold).UnixNano(); ; {
		l := d.latest.Load()
		if u <= l || d.latest.CompareAndSwap(l, u) {
			break
		}
	}
	for i, c := range counters {
		if counts[i] < c.Limit {
			continue
		}
		if d.size.Load() >= d.max {
			d.evict()
		}
		e := &denyEntry{until: until, reset: reset, count: counts[i], userID: c.UserID, groupID: c.GroupID, snap: snap, hold: hold}
		if _, loaded := d.m.Swap(c.Key, e); !loaded {
			d.size.Add(1)
		}
	}
}

// evict makes room: expired entries first, then any until below the bound.
func (d *DenyCache) evict() {
	d.sweep(d.now())
	d.m.Range(func(k, v any) bool {
		if d.size.Load() < d.max {
			return false
		}
		d.delete(k, v)
		return true
	})
}

// sweep drops expired entries.
func (d *DenyCache) sweep(now time.Time) {
	d.m.Range(func(k, v any) bool {
		if !now.Before(v.(*denyEntry).expires()) {
			d.delete(k, v)
		}
		return true
	})
}

func (d *DenyCache) delete(k, v any) {
	if d.m.CompareAndDelete(k, v) {
		d.size.Add(-1)
	}
}

// Peek implements Limiter.
func (d *DenyCache) Peek(ctx context.Context, keys []string) ([]int64, time.Duration, error) {
	return d.inner.Peek(ctx, keys)
}

// Reserved implements Limiter.
func (d *DenyCache) Reserved(keys []string) []int64 { return d.inner.Reserved(keys) }

// Forget implements Limiter: it drops the entries of counters of userID
// or of groupID (0 = none); both 0 drops all. It also forgets in inner.
func (d *DenyCache) Forget(userID, groupID int64) {
	d.m.Range(func(k, v any) bool {
		e := v.(*denyEntry)
		if (userID == 0 && groupID == 0) || (userID != 0 && e.userID == userID) || (groupID != 0 && e.groupID == groupID) {
			d.delete(k, v)
		}
		return true
	})
	d.inner.Forget(userID, groupID)
}

// Len returns the number of remembered counters, expired ones included
// until they are swept.
func (d *DenyCache) Len() int { return int(d.size.Load()) }
