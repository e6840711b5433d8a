package limiter

import (
	"strconv"
	"sync"
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

// lookupIn returns the entry of key in m, guarded by mu, or else stores
// and returns what fresh returns (nil: nothing, for a full map or after
// close), called with mu locked; made reports that it did. The key
// becomes a string only when an entry is made.
func lookupIn[V any](mu *sync.RWMutex, m map[string]*V, key []byte, fresh func() *V) (v *V, made bool) {
	mu.RLock()
	v = m[string(key)]
	mu.RUnlock()
	if v != nil {
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
