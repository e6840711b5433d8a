package snapshot

import (
	"sync"
	"time"
)

// Packed snapshots
//
// L1 keeps its snapshots packed: the numbers as they are, the strings and
// the group as numbers in tables that all entries share. A packed snapshot
// holds no pointer, so L1's slots are memory the garbage collector does
// not scan (see l1.go). Few strings (statuses, roles, group names) and few
// groups recur across a million keys, so the tables stay small; past
// maxShared entries a table takes no more, and a snapshot that needs a new
// one is kept unpacked (as one with IP lists is).

// maxShared bounds each table of a packer.
const maxShared = 1 << 16

// sharedChunk is the size of a table's chunks: a table grows by a chunk
// at a time and its entries never move, so a reader needs no lock.
const sharedChunk = 256

// table is an append-only list of values, numbered from 1 (0: none). Add
// and the map are behind the packer's lock; at reads entries without one,
// which is safe because an entry is written before its number is handed
// out, and the number reaches readers only through L1's shard locks.
type table[T comparable] struct {
	ids    map[T]uint32
	chunks [maxShared / sharedChunk]*[sharedChunk]T
	n      uint32
}

// id returns v's number, adding v if it is new; 0 once the table is full.
func (t *table[T]) id(v T) uint32 {
	if id, ok := t.ids[v]; ok {
		return id
	}
	if t.n >= maxShared {
		return 0
	}
	c := t.n / sharedChunk
	if t.chunks[c] == nil {
		t.chunks[c] = new([sharedChunk]T)
	}
	t.chunks[c][t.n%sharedChunk] = v
	t.n++
	if t.ids == nil {
		t.ids = make(map[T]uint32)
	}
	t.ids[v] = t.n
	return t.n
}

// at returns a pointer to entry id (not 0), which never changes.
func (t *table[T]) at(id uint32) *T {
	id--
	return &t.chunks[id/sharedChunk][id%sharedChunk]
}

// packer holds the tables of one L1.
type packer struct {
	mu      sync.Mutex
	strings table[string]
	groups  table[Group]
}

// packed is a snapshot without pointers. Strings and the group are table
// numbers (0: empty string, no group); the has* flags stand for the
// pointers that are not nil.
type packed struct {
	apiKeyID, userID, groupID int64
	quota, quotaUsed          float64
	expiresAt                 int64 // Unix ns
	user                      packedUser
	version                   int32
	status, group             uint32
	flags                     uint8
}

type packedUser struct {
	id, rpmLimit, override, concurrency int64
	balance                             float64
	status, role                        uint32
}

const (
	packedNotFound = 1 << iota
	packedGroupID
	packedExpires
	packedHasUser
	packedOverride
)

// pack packs s; ok is false for a snapshot that does not pack: one with IP
// lists, or one that needs a table entry past maxShared.
func (p *packer) pack(s *Snapshot) (out packed, ok bool) {
	if s.ip != nil || len(s.IPWhitelist) > 0 || len(s.IPBlacklist) > 0 {
		return packed{}, false
	}
	out = packed{apiKeyID: s.APIKeyID, userID: s.UserID, quota: s.Quota, quotaUsed: s.QuotaUsed, version: int32(s.Version)}
	if int(out.version) != s.Version {
		return packed{}, false
	}
	if s.NotFound {
		out.flags |= packedNotFound
	}
	if s.GroupID != nil {
		out.flags |= packedGroupID
		out.groupID = *s.GroupID
	}
	if s.ExpiresAt != nil {
		out.flags |= packedExpires
		out.expiresAt = s.ExpiresAt.UnixNano()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ok = p.str(s.Status, &out.status)
	if u := s.User; u != nil {
		out.flags |= packedHasUser
		out.user = packedUser{id: u.ID, rpmLimit: u.RPMLimit, concurrency: u.Concurrency, balance: u.Balance}
		if u.UserGroupRPMOverride != nil {
			out.flags |= packedOverride
			out.user.override = *u.UserGroupRPMOverride
		}
		ok = p.str(u.Status, &out.user.status) && p.str(u.Role, &out.user.role) && ok
	}
	if s.Group != nil {
		out.group = p.groups.id(*s.Group)
		ok = out.group != 0 && ok
	}
	return out, ok
}

// str sets *id to the number of s (0 for ""), reporting false if the
// table is full.
func (p *packer) str(s string, id *uint32) bool {
	if s == "" {
		return true
	}
	*id = p.strings.id(s)
	return *id != 0
}

// unpacked is a snapshot unpacked from an L1 slot, with what it points to
// and the slot and write it came from (see l1Table.get), in one
// allocation.
type unpacked struct {
	snap              Snapshot
	user              User
	groupID, override int64
	expiresAt         time.Time
	slot              int32
	write             uint32
}

// unpack returns a new snapshot equal to the one v was packed from (an
// expiry in UTC). It is one allocation; the group is the shared one, which
// no one may change.
func (p *packer) unpack(v *packed) *unpacked {
	all := new(unpacked)
	s := &all.snap
	s.Version, s.APIKeyID, s.UserID = int(v.version), v.apiKeyID, v.userID
	s.NotFound = v.flags&packedNotFound != 0
	s.Quota, s.QuotaUsed = v.quota, v.quotaUsed
	s.Status = p.text(v.status)
	if v.flags&packedGroupID != 0 {
		all.groupID = v.groupID
		s.GroupID = &all.groupID
	}
	if v.flags&packedExpires != 0 {
		all.expiresAt = time.Unix(0, v.expiresAt).UTC()
		s.ExpiresAt = &all.expiresAt
	}
	if v.flags&packedHasUser != 0 {
		u := &all.user
		pu := &v.user
		u.ID, u.RPMLimit, u.Concurrency, u.Balance = pu.id, pu.rpmLimit, pu.concurrency, pu.balance
		u.Status, u.Role = p.text(pu.status), p.text(pu.role)
		if v.flags&packedOverride != 0 {
			all.override = pu.override
			u.UserGroupRPMOverride = &all.override
		}
		s.User = u
	}
	if v.group != 0 {
		s.Group = p.groups.at(v.group)
	}
	return all
}

func (p *packer) text(id uint32) string {
	if id == 0 {
		return ""
	}
	return *p.strings.at(id)
}
