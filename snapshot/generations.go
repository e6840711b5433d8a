package snapshot

import (
	"math/bits"
	"sync/atomic"
)

// Invalidating a key, a user or a group by looking at every L1 entry
// (ForgetL1 with ForKey, ForUser or ForGroup) costs ≈ 16 ms with 65,536
// entries and ≈ 1.2 s with 1,048,576 on the 2-core test machine. ForgetKey,
// ForgetUser and ForgetGroup cost O(1) instead: each entry records, when
// it is stored, a stamp of the generations of its key id, its user and its
// group, and a read accepts it only while the stamp is unchanged. An
// invalidation bumps one generation. Generations live in one table per
// kind, indexed by a hash of the id: ids of one kind that share a slot are
// invalidated together, which costs them one extra load each and never
// serves anything stale. The key and user tables have a slot per possible
// L1 entry, so a slot is shared by about one other id when L1 is full.

type genKind int

const (
	genKey genKind = iota
	genUser
	genGroup
)

// generations holds the tables: 4 bytes per slot, ≈ 8.25 MiB with the
// default l1_size of 1,048,576, allocated by the first invalidation by id
// (until then every stamp is 0, which the new tables' zeros keep).
type generations struct {
	l1Size int
	tables atomic.Pointer[genTables]
}

type genTables [3][]atomic.Uint32

func newGenTables(l1Size int) *genTables {
	n := max(uint(1)<<bits.Len(uint(max(l1Size, 1)-1)), 1024) // a power of two ≥ l1Size
	return &genTables{
		genKey:   make([]atomic.Uint32, n),
		genUser:  make([]atomic.Uint32, n),
		genGroup: make([]atomic.Uint32, max(n/64, 1024)),
	}
}

// slot returns id's generation in the table of kind.
func (t *genTables) slot(kind genKind, id int64) *atomic.Uint32 {
	tab := t[kind]
	h := uint64(id)
	h = (h ^ h>>30) * 0xBF58476D1CE4E5B9 // splitmix64's finalizer
	h = (h ^ h>>27) * 0x94D049BB133111EB
	h ^= h >> 31
	return &tab[h&uint64(len(tab)-1)]
}

// stamp is the sum of the generations of s's key id, user and group.
// Generations only grow, so the sum changes whenever one of them does.
func (g *generations) stamp(s *Snapshot) uint32 { return g.stampOf(s.APIKeyID, s.UserID, s.GroupID) }

// stampOf is the stamp of a snapshot with these ids (groupID nil: none).
func (g *generations) stampOf(keyID, userID int64, groupID *int64) uint32 {
	t := g.tables.Load()
	if t == nil {
		return 0
	}
	st := t.slot(genKey, keyID).Load() + t.slot(genUser, userID).Load()
	if groupID != nil {
		st += t.slot(genGroup, *groupID).Load()
	}
	return st
}

func (g *generations) bump(kind genKind, id int64) {
	t := g.tables.Load()
	if t == nil {
		g.tables.CompareAndSwap(nil, newGenTables(g.l1Size))
		t = g.tables.Load()
	}
	t.slot(kind, id).Add(1)
}

// ForgetKey drops from L1 the snapshots of the API key id.
func (c *Cache) ForgetKey(id int64) { c.forgetGen(genKey, id) }

// ForgetUser drops from L1 the snapshots of the user's keys.
func (c *Cache) ForgetUser(id int64) { c.forgetGen(genUser, id) }

// ForgetGroup drops from L1 the snapshots of the group's keys.
func (c *Cache) ForgetGroup(id int64) { c.forgetGen(genGroup, id) }

// forgetGen bumps the epoch first, as every invalidation does, so that a
// load in flight does not store what it read (see fill).
func (c *Cache) forgetGen(kind genKind, id int64) {
	c.epoch.Add(1)
	c.gens.bump(kind, id)
}
