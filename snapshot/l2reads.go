package snapshot

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Sharing L2 reads
//
// An L1 miss reads L2 before it asks the store, and misses come in bursts:
// a cold start, a cache flush, more active keys than l1_size. A GET per
// miss would cost each one a round trip and the syscalls and wake-ups on
// both sides. So one L2 read is out at a time: a miss that arrives while
// one is out waits for the next, which carries every miss queued
// meanwhile (up to refreshBatch) in one read (readL2Many). At low load nothing
// queues and a miss sends its own read at once, as before. A queued miss
// waits at most for the read in flight and then for its own, each bounded
// by L2Timeout, and leaves earlier when its load's context ends.

// l2Reads queues the L2 reads that wait for the one in flight.
type l2Reads struct {
	mu    sync.Mutex
	busy  bool // a read is out
	queue []*l2Read
}

// l2Read is one queued L2 read.
type l2Read struct {
	ctx   context.Context
	key   string
	found l2Entry
	done  chan struct{} // closed once found is set
}

// l2Entry is a snapshot read from L2 and the hash of its bytes
// (l1Entry.l2sum); snap is nil for nothing usable.
type l2Entry struct {
	snap *Snapshot
	sum  uint64
}

// getL2 returns keyHash's entry in L2, with a nil snapshot for nothing
// usable: not there, of another version, corrupt, or L2 down or slow.
func (c *Cache) getL2(ctx context.Context, keyHash string) l2Entry {
	if !c.l2Usable() {
		return l2Entry{}
	}
	r := &c.l2reads
	r.mu.Lock()
	if !r.busy {
		r.busy = true
		r.mu.Unlock()
		e := c.getL2Many(ctx, []string{keyHash})[0]
		c.nextL2Reads()
		return e
	}
	q := &l2Read{ctx: ctx, key: keyHash, done: make(chan struct{})}
	r.queue = append(r.queue, q)
	r.mu.Unlock()
	select {
	case <-q.done:
		return q.found
	case <-ctx.Done():
		// The read, if already taken, completes for nobody.
		return l2Entry{}
	}
}

// nextL2Reads sends what queued during a read, from a new goroutine (the
// caller that made the read should get on with its request), or marks
// that no read is out.
func (c *Cache) nextL2Reads() {
	if batch := c.l2reads.next(); batch != nil {
		go c.drainL2Reads(batch)
	}
}

// drainL2Reads reads batch and then whatever queued meanwhile, until
// nothing is left.
func (c *Cache) drainL2Reads(batch []*l2Read) {
	keys := make([]string, 0, refreshBatch)
	for batch != nil {
		keys = keys[:0]
		for _, q := range batch {
			keys = append(keys, q.key)
		}
		found := c.getL2Many(context.Background(), keys)
		for i, q := range batch {
			q.found = found[i]
			close(q.done)
		}
		batch = c.l2reads.next()
	}
}

// next takes the reads queued during the read that just ended, or marks
// that no read is out when none did.
func (r *l2Reads) next() []*l2Read {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := r.take()
	if batch == nil {
		r.busy = false
	}
	return batch
}

// take removes up to refreshBatch reads from the queue, skipping those
// whose caller has left. Called with mu held.
func (r *l2Reads) take() []*l2Read {
	var batch []*l2Read
	n := 0
	for n < len(r.queue) && len(batch) < refreshBatch {
		q := r.queue[n]
		n++
		if q.ctx.Err() != nil {
			close(q.done)
			continue
		}
		batch = append(batch, q)
	}
	rest := copy(r.queue, r.queue[n:])
	clear(r.queue[rest:])
	r.queue = r.queue[:rest]
	return batch
}

// getL2Many reads keys from L2 in one round trip (readL2Many), bounded by
// L2Timeout, and returns their entries in order, with a nil snapshot for
// each that is missing, unreadable or of another version.
func (c *Cache) getL2Many(ctx context.Context, keys []string) []l2Entry {
	out := make([]l2Entry, len(keys))
	for i, b := range c.readL2Many(ctx, keys) {
		// An entry of another version or a corrupt one is a miss; the
		// load that follows overwrites it.
		if s, err := Decode(b); b != nil && err == nil {
			out[i] = l2Entry{snap: s, sum: maphash.Bytes(c.l2seed, b)}
		}
	}
	return out
}

// readL2Many is getL2Many without decoding: the stored bytes, nil for a
// key that is missing or could not be read. A single Redis answers one
// MGET (mgetL2); other clients get pipelined GETs.
func (c *Cache) readL2Many(ctx context.Context, keys []string) [][]byte {
	out := make([][]byte, len(keys))
	if !c.l2Usable() {
		return out
	}
	ctx, cancel := c.l2Context(ctx)
	defer cancel()
	if single, ok := c.l2.(*redis.Client); ok {
		return c.mgetL2(ctx, single, keys, out)
	}
	cmds := make([]*redis.StringCmd, len(keys))
	// The error is also each failed command's; they are read below.
	_, _ = c.l2.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, c.l2Key(k))
		}
		return nil
	})
	failed := false
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		if err != nil {
			failed = failed || !errors.Is(err, redis.Nil)
			continue
		}
		out[i] = b
	}
	if failed {
		c.hook0(c.hooks.L2Errors)
	}
	return out
}

// mgetL2 is readL2Many for a single Redis: one MGET, where Redis runs one
// command for all keys rather than one per key, which costs it about a
// third less per key than pipelined GETs (and the client one command
// object instead of one per key). A Cluster, whose keys are spread over slots
// one MGET cannot span, and a ring of shards read with pipelined GETs,
// which the client splits by node.
func (c *Cache) mgetL2(ctx context.Context, rdb *redis.Client, keys []string, out [][]byte) [][]byte {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = c.l2Key(k)
	}
	vals, err := rdb.MGet(ctx, names...).Result()
	if err != nil || len(vals) != len(keys) {
		c.hook0(c.hooks.L2Errors)
		return out
	}
	for i, v := range vals {
		// A missing key is nil, and so is one that holds another type.
		if s, ok := v.(string); ok {
			out[i] = []byte(s)
		}
	}
	return out
}
