package snapshot

import (
	"context"
	"hash/maphash"
	"sync/atomic"
	"time"
)

// Keys in use are reloaded before they expire. Under uniform access to
// many keys, expiry alone would make every key miss once per TTL: with
// 50,000 users each reading once every 50 s and a 5 m TTL, one request in
// seven. So a read of a fresh entry in the second half of its TTL queues
// the key, and one goroutine reloads the queued keys in the background,
// up to refreshBatch of them per L2 round trip (readL2Many). The read itself
// is a hit and waits for nothing. A reload only replaces the entry, which
// stays fresh until its own end, so nothing served is older than without
// it.

const (
	// refreshRetry spaces the reloads of one entry: the read that queues
	// a key moves its next reload this far on, so a reload that failed
	// (L2 and the store down) is retried at that pace, not on every read.
	refreshRetry = 5 * time.Second
	// refreshQueue bounds the keys waiting for a reload; past it a due key
	// is skipped and queued by a read after refreshRetry (or, if it is not
	// read by then, it expires and its next read loads it).
	refreshQueue = 4096
	// refreshBatch is the most keys one L2 round trip reads.
	refreshBatch = 256
	// refreshGather is how long due keys are gathered for a read that is
	// not full. Far below any TTL worth reloading ahead of.
	refreshGather = 100 * time.Millisecond
)

// refresher holds the keys due for a background reload.
type refresher struct {
	due chan string
	// running is set while a goroutine drains due. It ends when due is
	// empty, so an idle cache (and one dropped at a config reload) keeps
	// no goroutine.
	running atomic.Bool
}

// refresh queues keyHash, whose fresh entry e is past refreshAt at now,
// for a background reload.
func (c *Cache) refresh(keyHash string, e *l1Entry, now time.Duration) {
	if !c.l1.claimRefresh(keyHash, e.refreshAt, now+refreshRetry) {
		return
	}
	select {
	case c.refresher.due <- keyHash:
		c.hook0(c.hooks.Refresh)
	default:
		return
	}
	if c.refresher.running.CompareAndSwap(false, true) {
		go c.refreshLoop()
	}
}

// refreshLoop reloads the queued keys, a batch at a time, until none is
// left.
func (c *Cache) refreshLoop() {
	batch := make([]string, 0, refreshBatch)
	for {
		batch = batch[:0]
	drain:
		for len(batch) < refreshBatch {
			select {
			case k := <-c.refresher.due:
				batch = append(batch, k)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			batch = c.gatherDue(batch)
			c.reload(batch)
			continue
		}
		c.refresher.running.Store(false)
		// A key queued between the drain and the Store found the loop
		// running and started none: carry on if one is waiting.
		if len(c.refresher.due) == 0 || !c.refresher.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// gatherDue adds the keys that become due within refreshGather to a batch
// that is not full, until it is.
func (c *Cache) gatherDue(batch []string) []string {
	if len(batch) >= refreshBatch {
		return batch
	}
	t := time.NewTimer(refreshGather)
	defer t.Stop()
	for len(batch) < refreshBatch {
		select {
		case k := <-c.refresher.due:
			batch = append(batch, k)
		case <-t.C:
			return batch
		}
	}
	return batch
}

// reload reads keys from L2 in one round trip and puts what it found into
// L1 under the rule of fill: nothing is written once an invalidation has
// run since the read began, and what was written is dropped again if one
// ran during the writes. An entry whose L2 bytes are those it was decoded
// from, and that no invalidation has reached, is renewed without decoding
// them (a reload of an unchanged snapshot, by far the most common, costs
// a hash instead of a JSON decode and packing). The keys L2 lacks
// (every key, when L2 is down) are loaded from the store (reloadFromStore).
func (c *Cache) reload(keys []string) {
	epoch := c.epoch.Load()
	found := c.readL2Many(context.Background(), keys)
	var wrote, missing []string
	for i, k := range keys {
		b := found[i]
		if b == nil {
			missing = append(missing, k)
			continue
		}
		sum := maphash.Bytes(c.l2seed, b)
		if c.epoch.Load() == epoch && c.renewL1(k, sum) {
			// The bytes it was decoded from: renewed as it is.
			c.hook(c.hooks.Hit, "l2")
			wrote = append(wrote, k)
			continue
		}
		s, err := Decode(b)
		if err != nil {
			// Another version or a corrupt entry is a miss, as in fill.
			missing = append(missing, k)
			continue
		}
		c.hook(c.hooks.Hit, "l2")
		if c.epoch.Load() != epoch {
			continue
		}
		c.putL1(k, s, sum)
		wrote = append(wrote, k)
	}
	if c.epoch.Load() != epoch {
		for _, k := range wrote {
			c.l1.invalidate(k)
		}
	}
	c.reloadFromStore(missing)
}

// renewL1 makes keyHash's entry fresh again, as putL1 would, if it still
// holds the snapshot decoded from the L2 bytes whose hash is l2sum and no
// invalidation has reached it.
func (c *Cache) renewL1(keyHash string, l2sum uint64) bool {
	now, fresh, keep := c.l1Times(false) // L2 holds no negative entries
	return c.l1.renew(keyHash, l2sum, c.gens.stampOf, fresh, keep, now+(fresh-now)/2)
}

// reloadFromStore loads keys L2 lacks from the store into L1 and L2: with
// LoadMany in one read, under the rule of fill, and pipelined L2 writes;
// without it (or for a key it could not load) each as a miss would load it,
// in the background. A failed LoadMany leaves the entries as they are:
// served until their TTL ends and reloaded again by a read after
// refreshRetry, like any failed reload.
func (c *Cache) reloadFromStore(keys []string) {
	if len(keys) > 0 && c.cfg.LoadMany != nil {
		keys = c.loadMany(keys)
	}
	for _, k := range keys {
		c.flight.DoChan(k, func() (any, error) {
			lctx, cancel := c.loadContext(context.Background())
			defer cancel()
			return c.fill(lctx, k, true)
		})
	}
}

// loadMany loads keys with LoadMany and caches them like fill; it returns
// the keys it got no snapshot for.
func (c *Cache) loadMany(keys []string) []string {
	epoch := c.epoch.Load()
	for range keys {
		c.hook(c.hooks.Miss, "l2")
	}
	ctx, cancel := c.loadContext(context.Background())
	snaps, err := c.cfg.LoadMany(ctx, keys)
	cancel()
	if err != nil || len(snaps) != len(keys) {
		return nil
	}
	var rest []string
	var wrote []int
	for i, k := range keys {
		if snaps[i] == nil {
			rest = append(rest, k)
			continue
		}
		c.hook0(c.hooks.Load)
		c.hook0(c.hooks.Reload)
		wrote = append(wrote, i)
	}
	if c.epoch.Load() != epoch {
		return rest
	}
	encoded := make([][]byte, len(keys))
	for _, i := range wrote {
		var sum uint64
		encoded[i], sum = c.l2Bytes(snaps[i])
		c.putL1(keys[i], snaps[i], sum)
	}
	inL2 := c.setL2Many(context.Background(), keys, encoded, wrote)
	if c.epoch.Load() != epoch {
		for _, i := range wrote {
			c.l1.invalidate(keys[i])
		}
		for _, i := range inL2 {
			c.delL2(context.Background(), keys[i])
		}
	}
	return rest
}
