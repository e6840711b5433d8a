package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// The L1 table
//
// L1 holds the snapshots of every key in use, up to a million by default,
// and every garbage collection marks what the heap holds. Kept as objects
// (a cache node, a key string, an entry, a snapshot) L1 took 18 % of a
// busy gateway's CPU in GC work at 50,000 keys and 23 % at 200,000,
// against 7 % without it. So L1 keeps no pointer: a map from the key's 32
// bytes to a slot number, and slots holding the snapshot packed
// (packed.go). The collector scans neither, and the heap they add only
// spaces its cycles further apart. A hit unpacks into a new snapshot: one
// short-lived allocation. Each shard keeps the snapshot it unpacked last,
// so a key read again before another key of its shard (a hot user's, on
// most of its requests) is served without unpacking. The few snapshots
// that do not pack (with IP lists) are kept as objects beside the slots.
//
// The table is split into shards by key, each with its own lock, so reads
// from many cores do not meet. A full shard evicts with CLOCK: a read
// marks its slot, and the hand clears marks until it finds a slot not read
// since it last passed (or expired), so entries in use stay and one-off
// keys go first. Every write also frees up to two expired slots further
// on, so entries past l1_ttl and stale_if_error do not linger.

const (
	// l1ShardSize is about how many entries a shard holds: fewer shards
	// for a small L1, up to maxL1Shards.
	l1ShardSize = 1 << 14
	maxL1Shards = 64
)

// l1Table is L1.
type l1Table struct {
	shards []l1Shard
	shift  uint // a key's shard is its hash >> shift
	pack   packer
}

type l1Shard struct {
	mu    sync.RWMutex
	index map[[32]byte]int32
	slots []l1Slot
	limit int
	free  []int32
	hand  int // CLOCK
	sweep int // next slot checked for expiry
	loose map[int32]*Snapshot
	// writes numbers the shard's writes (under mu), so a slot's write
	// names the snapshot it holds.
	writes uint32
	// last is the snapshot the shard's latest unpacking hit made.
	last atomic.Pointer[unpacked]
}

// l1Slot is an entry. Reads hold the shard's read lock and writes its
// lock; refreshAt and used change under either, atomically.
type l1Slot struct {
	key        [32]byte
	freshUntil time.Duration
	keepUntil  time.Duration // the slot is free past it
	refreshAt  int64         // time.Duration; see l1Entry
	l2sum      uint64
	stamp      uint32
	used       uint32 // 1: read since the CLOCK hand passed
	write      uint32 // the shard's number of the write that stored snap
	live       bool
	loose      bool // the snapshot is in the shard's loose map
	snap       packed
}

// l1Entry is an L1 entry as the cache sees it. Its times are durations
// since the cache's birth (Cache.clock).
type l1Entry struct {
	snap       *Snapshot
	freshUntil time.Duration
	// keepUntil is when the entry leaves L1: freshUntil plus
	// stale_if_error, so it can be served while the store is down.
	keepUntil time.Duration
	// refreshAt is when a read starts a background reload of the entry;
	// the read that starts it moves refreshAt on by refreshRetry, so a
	// reload that fails is retried at that pace, not on every read.
	refreshAt time.Duration
	// stamp is the generations' stamp of snap when it was stored: the
	// entry is valid while it is unchanged (see generations).
	stamp uint32
	// l2sum is the hash of the L2 bytes snap was decoded from, 0 if it
	// came from the store: a reload that reads the same bytes renews the
	// entry without decoding them again (see reload).
	l2sum uint64
}

// newL1Table returns an L1 for at most about size entries (each shard
// holds its share, rounded up).
func newL1Table(size int) *l1Table {
	size = max(size, 1)
	n := min(maxL1Shards, 1<<bits.Len(uint(size/l1ShardSize)))
	if size < 2*l1ShardSize {
		n = 1
	}
	t := &l1Table{shards: make([]l1Shard, n), shift: uint(64 - bits.TrailingZeros(uint(n)))}
	for i := range t.shards {
		t.shards[i].limit = (size + n - 1) / n
		t.shards[i].index = make(map[[32]byte]int32)
	}
	return t
}

// l1Key is the 32 bytes of a lowercase hex SHA-256 key hash; any other
// string (tests use some) is hashed to 32 bytes.
func l1Key(keyHash string) [32]byte {
	var k [32]byte
	if len(keyHash) == 64 {
		ok := true
		for i := range k {
			hi, lo := unhex(keyHash[2*i]), unhex(keyHash[2*i+1])
			if hi > 15 || lo > 15 {
				ok = false
				break
			}
			k[i] = hi<<4 | lo
		}
		if ok {
			return k
		}
	}
	return sha256.Sum256([]byte(keyHash))
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return 255
}

func (t *l1Table) shard(k *[32]byte) *l1Shard {
	h := (binary.LittleEndian.Uint64(k[:8]) ^ binary.LittleEndian.Uint64(k[24:])) * 0x9E3779B97F4A7C15
	return &t.shards[h>>t.shift]
}

// get returns the entry of the key whose l1Key is k unless there is none
// or it is past keepUntil at now.
func (t *l1Table) get(k *[32]byte, now time.Duration) (l1Entry, bool) {
	sh := t.shard(k)
	sh.mu.RLock()
	i, ok := sh.index[*k]
	if !ok {
		sh.mu.RUnlock()
		return l1Entry{}, false
	}
	sl := &sh.slots[i]
	if now >= sl.keepUntil {
		sh.mu.RUnlock()
		return l1Entry{}, false
	}
	if atomic.LoadUint32(&sl.used) == 0 {
		atomic.StoreUint32(&sl.used, 1)
	}
	e := l1Entry{freshUntil: sl.freshUntil, keepUntil: sl.keepUntil, refreshAt: time.Duration(atomic.LoadInt64(&sl.refreshAt)),
		stamp: sl.stamp, l2sum: sl.l2sum}
	if sl.loose {
		e.snap = sh.loose[i]
		sh.mu.RUnlock()
		return e, true
	}
	if u := sh.last.Load(); u != nil && u.slot == i && u.write == sl.write {
		sh.mu.RUnlock()
		e.snap = &u.snap
		return e, true
	}
	p, write := sl.snap, sl.write
	sh.mu.RUnlock()
	u := t.pack.unpack(&p)
	u.slot, u.write = i, write
	sh.last.Store(u)
	e.snap = &u.snap
	return e, true
}

// claimRefresh moves keyHash's refreshAt from at to next and reports
// whether this call did (so one read per due entry queues its reload).
func (t *l1Table) claimRefresh(keyHash string, at, next time.Duration) bool {
	k := l1Key(keyHash)
	sh := t.shard(&k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i, ok := sh.index[k]
	return ok && atomic.CompareAndSwapInt64(&sh.slots[i].refreshAt, int64(at), int64(next))
}

// set stores e as keyHash's entry at now, in place of any other.
func (t *l1Table) set(keyHash string, e l1Entry, now time.Duration) {
	k := l1Key(keyHash)
	p, packs := t.pack.pack(e.snap)
	sh := t.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweepExpired(now)
	i, ok := sh.index[k]
	if !ok {
		i = sh.slot(now)
		sh.index[k] = i
	}
	sh.writes++
	sl := &sh.slots[i]
	*sl = l1Slot{key: k, freshUntil: e.freshUntil, keepUntil: e.keepUntil, refreshAt: int64(e.refreshAt),
		l2sum: e.l2sum, stamp: e.stamp, write: sh.writes, live: true, snap: p}
	if packs {
		delete(sh.loose, i)
		return
	}
	sl.loose, sl.snap = true, packed{}
	if sh.loose == nil {
		sh.loose = make(map[int32]*Snapshot)
	}
	sh.loose[i] = e.snap
}

// renew gives keyHash's entry new times if it still holds the snapshot
// decoded from the L2 bytes whose hash is l2sum and its stamp is still
// current (stampOf: as generations.stampOf), and reports whether it did.
func (t *l1Table) renew(keyHash string, l2sum uint64, stampOf func(keyID, userID int64, groupID *int64) uint32,
	freshUntil, keepUntil, refreshAt time.Duration) bool {
	k := l1Key(keyHash)
	sh := t.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[k]
	if !ok || sh.slots[i].l2sum != l2sum || l2sum == 0 {
		return false
	}
	sl := &sh.slots[i]
	var current uint32
	if s := sh.loose[i]; sl.loose {
		current = stampOf(s.APIKeyID, s.UserID, s.GroupID)
	} else {
		var gid *int64
		if sl.snap.flags&packedGroupID != 0 {
			gid = &sl.snap.groupID
		}
		current = stampOf(sl.snap.apiKeyID, sl.snap.userID, gid)
	}
	if sl.stamp != current {
		return false
	}
	sl.freshUntil, sl.keepUntil, sl.refreshAt = freshUntil, keepUntil, int64(refreshAt)
	return true
}

// invalidate drops keyHash's entry.
func (t *l1Table) invalidate(keyHash string) {
	k := l1Key(keyHash)
	sh := t.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, ok := sh.index[k]; ok {
		sh.drop(i)
	}
}

// invalidateAll drops every entry and gives back the memory.
func (t *l1Table) invalidateAll() {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.index, sh.slots, sh.free, sh.loose = make(map[[32]byte]int32), nil, nil, nil
		sh.hand, sh.sweep = 0, 0
		sh.last.Store(nil)
		sh.mu.Unlock()
	}
}

// forget drops the entries whose snapshot matches.
func (t *l1Table) forget(match func(*Snapshot) bool) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for j := range sh.slots {
			sl := &sh.slots[j]
			if !sl.live {
				continue
			}
			s := sh.loose[int32(j)]
			if !sl.loose {
				s = &t.pack.unpack(&sl.snap).snap
			}
			if match(s) {
				sh.drop(int32(j))
			}
		}
		sh.mu.Unlock()
	}
}

// len returns the number of entries, expired ones not yet freed included.
func (t *l1Table) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		n += len(sh.index)
		sh.mu.RUnlock()
	}
	return n
}

// slot returns a slot for a new entry: a free one, a new one while the
// shard has room, else the CLOCK's victim.
func (sh *l1Shard) slot(now time.Duration) int32 {
	if n := len(sh.free); n > 0 {
		i := sh.free[n-1]
		sh.free = sh.free[:n-1]
		return i
	}
	if len(sh.slots) < sh.limit {
		sh.slots = append(sh.slots, l1Slot{})
		return int32(len(sh.slots) - 1)
	}
	// At most two turns: the first clears every mark. No slot is free
	// here, so each is live.
	for {
		if sh.hand >= len(sh.slots) {
			sh.hand = 0
		}
		i := int32(sh.hand)
		sh.hand++
		sl := &sh.slots[i]
		if now >= sl.keepUntil || atomic.LoadUint32(&sl.used) == 0 {
			sh.drop(i)
			sh.free = sh.free[:len(sh.free)-1]
			return i
		}
		atomic.StoreUint32(&sl.used, 0)
	}
}

// sweepExpired frees up to two expired slots after the last one checked.
func (sh *l1Shard) sweepExpired(now time.Duration) {
	for range 2 {
		if sh.sweep >= len(sh.slots) {
			sh.sweep = 0
			return
		}
		if sl := &sh.slots[sh.sweep]; sl.live && now >= sl.keepUntil {
			sh.drop(int32(sh.sweep))
		}
		sh.sweep++
	}
}

// drop frees slot i.
func (sh *l1Shard) drop(i int32) {
	sl := &sh.slots[i]
	delete(sh.index, sl.key)
	if sl.loose {
		delete(sh.loose, i)
	}
	*sl = l1Slot{}
	sh.free = append(sh.free, i)
}
