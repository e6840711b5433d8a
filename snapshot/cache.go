package snapshot

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Loader reads a snapshot from the store. It returns a negative snapshot
// (see Negative) for an unknown key and an error only when the store could
// not answer.
type Loader func(ctx context.Context, keyHash string) (*Snapshot, error)

// ErrUnavailable reports that no usable snapshot exists and the store could
// not be asked: the caller answers 503, never 401.
var ErrUnavailable = errors.New("auth store unavailable")

// CacheConfig sizes the two cache layers.
type CacheConfig struct {
	// L1Size is about the most snapshots L1 holds (see l1.go). Past it, a
	// new entry replaces one not read lately; up to it, nothing is evicted.
	L1Size int
	// L1TTL is how long a snapshot in L1 is fresh. Invalidations remove
	// entries as soon as they arrive, so the TTL is only a safety net for
	// a change no notification reported. An entry read in the second half
	// of its TTL is reloaded in the background (see refresh), so keys in
	// use do not expire.
	L1TTL time.Duration
	// L2TTL is how long a snapshot lives in Redis.
	L2TTL time.Duration
	// NegativeTTL caps L1TTL for negative entries (unknown keys).
	NegativeTTL time.Duration
	// Jitter spreads every TTL by up to this fraction either way (0.1:
	// ±10 %), so entries loaded together do not expire together.
	Jitter float64
	// StaleIfError is how long past its TTL an L1 entry may still be
	// served while the store fails.
	StaleIfError time.Duration
	// L2Prefix prefixes the Redis keys of L2 entries.
	L2Prefix string
	// L2Timeout bounds each L2 call so a slow Redis never stalls auth.
	L2Timeout time.Duration
	// Health, if set, is asked whether Redis is known to be down (the
	// gateway, whose breaker guards Redis); L2 is then skipped instead of
	// waited on.
	Health Health
	// LoadTimeout bounds the wait for a snapshot that is not fresh in L1:
	// the shared load (L2 read and store query) runs under this deadline,
	// and each caller stops waiting this long after it joined even if the
	// loader ignores its deadline. Zero means no bound.
	LoadTimeout time.Duration
	// LoadMany, if set, loads the snapshots of many keys in one read of
	// the store (in their order; nil for one it could not load), for the
	// background reloads of keys L2 lacks (see reloadFromStore). Nil: each
	// such key is loaded on its own, as a miss would load it.
	LoadMany func(ctx context.Context, keyHashes []string) ([]*Snapshot, error)
}

// Health is the view of Redis health the cache asks before using L2.
type Health interface {
	// RedisDown reports that Redis is known to be unreachable.
	RedisDown() bool
}

// CacheHooks observe the cache for metrics. Nil hooks are skipped.
type CacheHooks struct {
	Hit      func(layer string)
	Miss     func(layer string)
	Load     func()
	Stale    func()
	L2Errors func()
	// Refresh is called when a fresh L1 entry in the second half of its
	// TTL starts its background reload (whose L2 read and store load the
	// other hooks count as usual).
	Refresh func()
	// Reload is called, besides Load, for each store load of a background
	// reload (a key in use whose L2 entry had expired), which no request
	// waits for.
	Reload func()
}

// Cache serves snapshots from L1 (in-process), then L2 (Redis), then the
// store, collapsing concurrent misses of one key into a single load.
type Cache struct {
	cfg   CacheConfig
	l1    *l1Table
	l2    redis.UniversalClient
	load  Loader
	hooks CacheHooks
	now   func() time.Time
	// born is the origin of the entries' times, which are durations since
	// it: 8 bytes each instead of a time.Time's 24.
	born      time.Time
	l2seed    maphash.Seed // of l1Entry.l2sum
	refresher refresher
	l2reads   l2Reads
	gens      generations

	flight singleflight.Group
	// epoch changes on every invalidation; a load that began before one
	// does not write its (possibly outdated) result to the caches.
	epoch atomic.Uint64
}

// NewCache builds a cache. l2 may be nil (L1 only).
func NewCache(cfg CacheConfig, l2 redis.UniversalClient, load Loader, hooks CacheHooks) *Cache {
	c := &Cache{cfg: cfg, l2: l2, load: load, hooks: hooks, now: time.Now, born: time.Now(), l2seed: maphash.MakeSeed(),
		refresher: refresher{due: make(chan string, refreshQueue)}, gens: generations{l1Size: cfg.L1Size}}
	c.l1 = newL1Table(cfg.L1Size)
	return c
}

// clock is the time now as a duration since the cache's birth (monotonic
// when now is).
func (c *Cache) clock() time.Duration { return c.now().Sub(c.born) }

// Get returns the snapshot of keyHash. A negative snapshot means the key is
// unknown. ErrUnavailable means the store failed and nothing usable is cached.
func (c *Cache) Get(ctx context.Context, keyHash string) (*Snapshot, error) {
	k := l1Key(keyHash)
	return c.get(ctx, &k, keyHash)
}

// GetSum is Get for the key whose SHA-256 is sum. A fresh L1 entry, what
// most reads find, is found by the 32 bytes themselves: the hex form the
// other layers are keyed by is made only for a miss or a due reload.
func (c *Cache) GetSum(ctx context.Context, sum *[32]byte) (*Snapshot, error) {
	return c.get(ctx, sum, "")
}

// get is Get of the key whose l1Key is k and whose hash is keyHash ("":
// the hex form of k, made when needed).
func (c *Cache) get(ctx context.Context, k *[32]byte, keyHash string) (*Snapshot, error) {
	now := c.clock()
	e, ok := c.l1.get(k, now)
	ok = ok && e.stamp == c.gens.stamp(e.snap)
	if ok && now < e.freshUntil {
		c.hook(c.hooks.Hit, "l1")
		if now >= e.refreshAt {
			c.refresh(orHex(keyHash, k), &e, now)
		}
		return e.snap, nil
	}
	keyHash = orHex(keyHash, k)
	c.hook(c.hooks.Miss, "l1")
	s, err := c.await(ctx, keyHash)
	if err == nil {
		return s, nil
	}
	// Serve a stale positive snapshot rather than fail: an outage is not a
	// reason to lock out known keys. A stale negative is not served, since
	// the key may have been created meanwhile.
	if ok && !e.snap.NotFound && c.clock() < e.freshUntil+c.cfg.StaleIfError {
		if c.hooks.Stale != nil {
			c.hooks.Stale()
		}
		return e.snap, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// orHex returns keyHash, or if it is empty the lowercase hex form of k.
func orHex(keyHash string, k *[32]byte) string {
	if keyHash != "" {
		return keyHash
	}
	return hex.EncodeToString(k[:])
}

// await joins the shared load of keyHash, or starts it, and waits for its
// result. The load belongs to no single caller, so it is detached from
// ctx; each caller leaves on its own when its ctx ends (a client that went
// away) or after LoadTimeout, so none stays parked behind a store that
// does not answer.
func (c *Cache) await(ctx context.Context, keyHash string) (*Snapshot, error) {
	ch := c.flight.DoChan(keyHash, func() (any, error) {
		lctx, cancel := c.loadContext(context.WithoutCancel(ctx))
		defer cancel()
		return c.fill(lctx, keyHash, false)
	})
	var timeout <-chan time.Time
	if c.cfg.LoadTimeout > 0 {
		t := time.NewTimer(c.cfg.LoadTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Snapshot), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for snapshot load: %w", context.Cause(ctx))
	case <-timeout:
		return nil, fmt.Errorf("wait for snapshot load: no answer within %v", c.cfg.LoadTimeout)
	}
}

func (c *Cache) loadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.LoadTimeout > 0 {
		return context.WithTimeout(ctx, c.cfg.LoadTimeout)
	}
	return context.WithCancel(ctx)
}

// fill reads keyHash from L2 or the store and caches what it read, unless
// an invalidation ran meanwhile: a load must not leave a snapshot older
// than an invalidation in a cache. Each invalidation bumps the epoch before
// it deletes anything, so the epoch is compared twice: before writing (an
// invalidation during the read) and after the writes have landed (one
// during the writes, whose deletes may have landed first). The second time
// the load deletes what it wrote; an invalidation that bumps the epoch
// after that read deletes it itself.
func (c *Cache) fill(ctx context.Context, keyHash string, background bool) (*Snapshot, error) {
	epoch := c.epoch.Load()
	if e := c.getL2(ctx, keyHash); e.snap != nil {
		c.hook(c.hooks.Hit, "l2")
		if c.epoch.Load() == epoch {
			c.putL1(keyHash, e.snap, e.sum)
			if c.epoch.Load() != epoch {
				c.l1.invalidate(keyHash)
			}
		}
		return e.snap, nil
	}
	c.hook(c.hooks.Miss, "l2")
	c.hook0(c.hooks.Load)
	if background {
		c.hook0(c.hooks.Reload)
	}
	s, err := c.load(ctx, keyHash)
	if err != nil {
		return nil, fmt.Errorf("load snapshot: %w", err)
	}
	if c.epoch.Load() == epoch {
		b, sum := c.l2Bytes(s)
		c.putL1(keyHash, s, sum)
		// The writes get their own L2 bound, not what the load left over.
		wctx := context.WithoutCancel(ctx)
		wrote := c.setL2(wctx, keyHash, b)
		if c.epoch.Load() != epoch {
			c.l1.invalidate(keyHash)
			if wrote {
				c.delL2(wctx, keyHash)
			}
		}
	}
	return s, nil
}

func (c *Cache) l2Usable() bool {
	return c.l2 != nil && (c.cfg.Health == nil || !c.cfg.Health.RedisDown())
}

// setL1 stores s in L1, fresh for the (jittered) TTL and refreshed when
// read in its second half. L1 keeps a packed copy (packed.go): s itself is
// left alone, as a loader may hand it to other callers.
func (c *Cache) setL1(keyHash string, s *Snapshot) {
	c.putL1(keyHash, s, 0)
}

// putL1 is setL1 for a snapshot that is what the L2 bytes with hash l2sum
// decode to (0: none; see l1Entry): it was decoded from them, or they were
// encoded from it. So the first background reload that finds those bytes
// renews the entry rather than decodes them again.
func (c *Cache) putL1(keyHash string, s *Snapshot, l2sum uint64) {
	now, fresh, keep := c.l1Times(s.NotFound)
	e := l1Entry{snap: s, freshUntil: fresh, keepUntil: keep, refreshAt: now + (fresh-now)/2, stamp: c.gens.stamp(s), l2sum: l2sum}
	c.l1.set(keyHash, e, now)
}

// l1Times returns the time now and, for an entry stored now, the end of its
// (jittered) freshness and of its stay in L1.
func (c *Cache) l1Times(negative bool) (now, freshUntil, keepUntil time.Duration) {
	ttl := c.cfg.L1TTL
	if negative {
		ttl = min(ttl, c.cfg.NegativeTTL)
	}
	now = c.clock()
	freshUntil = now + c.jitter(ttl)
	return now, freshUntil, freshUntil + c.cfg.StaleIfError
}

// l2Bytes returns what L2 holds for s and the hash of it (l1Entry.l2sum),
// or nil and 0 if s goes to no L2: L2 is unusable, or s is a negative
// entry. Negative entries stay in process: a key anyone can make up must
// not cost Redis memory, where it could push out counters.
func (c *Cache) l2Bytes(s *Snapshot) ([]byte, uint64) {
	if !c.l2Usable() || s.NotFound {
		return nil, 0
	}
	b, err := Encode(s)
	if err != nil {
		return nil, 0
	}
	return b, maphash.Bytes(c.l2seed, b)
}

// setL2 writes b, a snapshot's bytes from l2Bytes, to L2 and reports
// whether the write may have landed (an error after sending, such as a
// timeout, may still have written). Nil bytes are no write.
func (c *Cache) setL2(ctx context.Context, keyHash string, b []byte) bool {
	if b == nil || !c.l2Usable() {
		return false
	}
	ctx, cancel := c.l2Context(ctx)
	defer cancel()
	if err := c.l2.Set(ctx, c.l2Key(keyHash), b, c.jitter(c.cfg.L2TTL)).Err(); err != nil {
		c.hook0(c.hooks.L2Errors)
	}
	return true
}

// setL2Many writes the bytes at the given indices (from l2Bytes) to L2 in
// one pipelined round trip and returns the indices whose write may have
// landed (see setL2); nil bytes are skipped.
func (c *Cache) setL2Many(ctx context.Context, keys []string, encoded [][]byte, at []int) []int {
	if !c.l2Usable() {
		return nil
	}
	var written []int
	ctx, cancel := c.l2Context(ctx)
	defer cancel()
	_, err := c.l2.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range at {
			if encoded[i] != nil {
				p.Set(ctx, c.l2Key(keys[i]), encoded[i], c.jitter(c.cfg.L2TTL))
				written = append(written, i)
			}
		}
		return nil
	})
	if err != nil {
		c.hook0(c.hooks.L2Errors)
	}
	return written
}

// delL2 deletes keyHash's L2 entry. Failing, the entry lives out its L2
// TTL, as after any failed invalidation.
func (c *Cache) delL2(ctx context.Context, keyHash string) {
	ctx, cancel := c.l2Context(ctx)
	defer cancel()
	if err := c.l2.Del(ctx, c.l2Key(keyHash)).Err(); err != nil {
		c.hook0(c.hooks.L2Errors)
	}
}

// jitter spreads expiries by ±Jitter so entries loaded together do not
// expire together.
func (c *Cache) jitter(d time.Duration) time.Duration {
	if c.cfg.Jitter <= 0 || d <= 0 {
		return d
	}
	f := 1 + c.cfg.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

func (c *Cache) l2Key(keyHash string) string { return c.cfg.L2Prefix + keyHash }

func (c *Cache) l2Context(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.L2Timeout > 0 {
		return context.WithTimeout(ctx, c.cfg.L2Timeout)
	}
	return context.WithCancel(ctx)
}

func (c *Cache) hook(f func(string), layer string) {
	if f != nil {
		f(layer)
	}
}

func (c *Cache) hook0(f func()) {
	if f != nil {
		f()
	}
}
