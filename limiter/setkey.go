package limiter

import (
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// capped is a Counter or a Slot: a key with its limit.
type capped interface {
	keyLimit() (string, int64)
}

func (c Counter) keyLimit() (string, int64) { return c.Key, c.Limit }
func (s Slot) keyLimit() (string, int64)    { return s.Key, s.Limit }

// appendSetKey appends the name of a set of counters or of slots to b:
// its keys and limits.
func appendSetKey[T capped](b []byte, set []T) []byte {
	for i, c := range set {
		k, n := c.keyLimit()
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, k...)
		b = append(b, 0)
		b = strconv.AppendInt(b, n, 10)
	}
	return b
}

// lookupIn returns the entry of key in m, guarded by mu. A key without an
// entry gets one only if recent saw it within rateBucket (see recentSets):
// then fresh's value (nil: nothing, for a full map or after close), called
// with mu locked, is stored and returned, and made reports that it was. The
// key becomes a string only when an entry is made.
func lookupIn[V any](mu *sync.RWMutex, m map[string]*V, recent *recentSets, key []byte, now time.Time, fresh func() *V) (v *V, made bool) {
	mu.RLock()
	v = m[string(key)]
	mu.RUnlock()
	if v != nil || !recent.again(key, now) {
		return v, false
	}
	mu.Lock()
	defer mu.Unlock()
	if v = m[string(key)]; v != nil {
		return v, false
	}
	if v = fresh(); v != nil {
		m[string(key)] = v
	}
	return v, v != nil
}

// recentSlots is the number of slots of a recentSets.
const recentSlots = 4096

// recentSets tells whether a set had a request within the last
// rateBucket, so that a set gets an entry (and its upkeep: an allocation, a
// map insert, a sweep, a delete) only from its second request within
// rateBucket, the least that can size a grant. With many users at moderate
// rates nearly every request is of a set not seen for seconds: before, each
// made an entry that the next sweep dropped again.
//
// Each slot holds the last request hashed to it: a 16-bit fingerprint of
// its set and its time in µs (48 bits, wrapping every 8.9 years). Sets of
// one slot overwrite each other, which at worst delays a hot set's entry
// by a request; two sets pass for each other only if their fingerprints
// match too, which costs an entry and perhaps a small grant, never a
// wrong decision.
type recentSets struct {
	seed  maphash.Seed
	slots [recentSlots]atomic.Uint64
}

func newRecentSets() *recentSets { return &recentSets{seed: maphash.MakeSeed()} }

const recentTimeBits = 48

// again records a request of the set named key at now and reports whether
// one came within rateBucket before it.
func (r *recentSets) again(key []byte, now time.Time) bool {
	const timeMask = 1<<recentTimeBits - 1
	h := maphash.Bytes(r.seed, key)
	us := uint64(now.UnixMicro()) & timeMask
	fp := h >> recentTimeBits
	last := r.slots[h%recentSlots].Swap(fp<<recentTimeBits | us)
	return last>>recentTimeBits == fp && (us-last)&timeMask < uint64(rateBucket/time.Microsecond)
}
