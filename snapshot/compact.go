package snapshot

import "sync"

// maxShared bounds each table of an interner. Past it the table starts
// over: the parts are still correct, only no longer shared.
const maxShared = 4096

// interner shares, between the snapshots of L1, the parts that many keys
// have alike: the group sub-snapshot (one per group, not one per key) and
// short strings such as statuses and roles. With 1 M keys in L1 this saves
// about a third of its memory (see TestL1BytesPerSnapshot). Only the fill
// path takes its lock; cache hits never do.
type interner struct {
	mu      sync.Mutex
	groups  map[Group]*Group
	strings map[string]string
}

// compact returns a copy of s whose group, group id and short strings are
// shared with the other snapshots of L1. s itself is left alone: a loader
// may hand the same snapshot to other callers.
func (in *interner) compact(s *Snapshot) *Snapshot {
	// The snapshot and its user in one allocation: one object less per
	// entry for the garbage collector to find and mark.
	both := new(struct {
		s Snapshot
		u User
	})
	both.s = *s
	c := &both.s
	in.mu.Lock()
	defer in.mu.Unlock()
	c.Status = in.str(c.Status)
	if c.User != nil {
		both.u = *c.User
		u := &both.u
		u.Status, u.Role = in.str(u.Status), in.str(u.Role)
		c.User = u
	}
	if c.Group != nil {
		c.Group = in.group(*c.Group)
		// The key's group id is the group's: point at the shared one
		// instead of holding a copy.
		if c.GroupID != nil && *c.GroupID == c.Group.ID {
			c.GroupID = &c.Group.ID
		}
	}
	return c
}

func (in *interner) group(g Group) *Group {
	g.Name, g.Platform, g.Status = in.str(g.Name), in.str(g.Platform), in.str(g.Status)
	if p, ok := in.groups[g]; ok {
		return p
	}
	if in.groups == nil || len(in.groups) >= maxShared {
		in.groups = make(map[Group]*Group)
	}
	p := new(Group) // not &g, which would move g to the heap on every call
	*p = g
	in.groups[g] = p
	return p
}

// str shares strings up to 64 bytes; longer ones are rare and kept as
// they are.
func (in *interner) str(s string) string {
	if s == "" || len(s) > 64 {
		return s
	}
	if v, ok := in.strings[s]; ok {
		return v
	}
	if in.strings == nil || len(in.strings) >= maxShared {
		in.strings = make(map[string]string)
	}
	in.strings[s] = s
	return s
}
