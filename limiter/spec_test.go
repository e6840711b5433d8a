package limiter

import (
	"context"
	"testing"
	"time"
)

// backend is a Limiter under test with a way to read counters back.
type backend struct {
	lim  Limiter
	keys Keys
	// count reads a counter's current-window count without the limiter
	// under test where possible.
	count func(t *testing.T, key string) int64
	// wait makes sure the next requests share one window.
	wait func(t *testing.T)
}

func userCounter(k Keys, uid, limit int64) Counter {
	return Counter{Key: k.User(uid), Limit: limit, UserID: uid}
}

func groupCounter(k Keys, uid, gid, limit int64) Counter {
	return Counter{Key: k.UserGroup(uid, gid), Limit: limit, UserID: uid, GroupID: gid}
}

func zoneUserCounter(k Keys, zone string, uid, limit int64) Counter {
	return Counter{Key: k.ZoneUser(zone, uid), Limit: limit, UserID: uid}
}

func zoneKeyCounter(k Keys, zone string, uid, keyID, limit int64) Counter {
	return Counter{Key: k.ZoneKey(zone, uid, keyID), Limit: limit, UserID: uid}
}

// readCounts reads back the counts of counters.
func (b backend) readCounts(t *testing.T, counters []Counter) []int64 {
	t.Helper()
	out := make([]int64, len(counters))
	for i, c := range counters {
		out[i] = b.count(t, c.Key)
	}
	return out
}

// admit sends n requests that must all be admitted, each incrementing
// every counter by one.
func (b backend) admit(t *testing.T, counters []Counter, n int) {
	t.Helper()
	for range n {
		before := b.readCounts(t, counters)
		res, err := b.lim.Check(context.Background(), counters)
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		if !res.Allowed || res.Denied != -1 || res.Local {
			t.Fatalf("refused (denied %d, counts %v), want admitted", res.Denied, res.Counts)
		}
		checkResetIn(t, res.ResetIn)
		after := b.readCounts(t, counters)
		for i := range counters {
			if res.Counts[i] != before[i]+1 || after[i] != before[i]+1 {
				t.Fatalf("counter %s: before %d, result %d, read back %d; want +1", counters[i].Key, before[i], res.Counts[i], after[i])
			}
		}
	}
}

// fill sends n requests that must be admitted, then one that must be
// refused by counter denied (see admit and refuse).
func (b backend) fill(t *testing.T, counters []Counter, n, denied int) {
	t.Helper()
	b.admit(t, counters, n)
	b.refuse(t, counters, denied)
}

// refuse sends a request that must be refused by counter denied and must
// leave every counter unchanged.
func (b backend) refuse(t *testing.T, counters []Counter, denied int) {
	t.Helper()
	before := b.readCounts(t, counters)
	res, err := b.lim.Check(context.Background(), counters)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if res.Allowed {
		t.Fatalf("admitted (counts %v), want refused by %s", res.Counts, counters[denied].Key)
	}
	if res.Denied != denied {
		t.Fatalf("denied by %d, want %d (counts %v)", res.Denied, denied, res.Counts)
	}
	checkResetIn(t, res.ResetIn)
	after := b.readCounts(t, counters)
	for i := range counters {
		if res.Counts[i] != before[i] || after[i] != before[i] {
			t.Fatalf("counter %s changed by a refusal: before %d, result %d, read back %d", counters[i].Key, before[i], res.Counts[i], after[i])
		}
	}
	if res.Counts[denied] < counters[denied].Limit {
		t.Fatalf("denying counter count %d below its limit %d", res.Counts[denied], counters[denied].Limit)
	}
}

func checkResetIn(t *testing.T, d time.Duration) {
	t.Helper()
	if d <= 0 || d > Window {
		t.Fatalf("ResetIn %v outside (0, 60s]", d)
	}
}

// testSpecTable runs every row of the limit rules (user limit, group limit
// or the user's override in the group, 0 exempts) as the counter sets the
// gateway builds for it.
func testSpecTable(t *testing.T, b backend) {
	k := b.keys
	b.wait(t)

	t.Run("no limits: admitted without counters", func(t *testing.T) {
		for range 3 {
			res, err := b.lim.Check(context.Background(), nil)
			if err != nil || !res.Allowed || res.Denied != -1 {
				t.Fatalf("got %+v, %v; want admitted", res, err)
			}
		}
	})
	t.Run("group G, user 0", func(t *testing.T) {
		cs := []Counter{groupCounter(k, 1, 10, 3)}
		b.fill(t, cs, 3, 0)
		b.refuse(t, cs, 0)
	})
	for _, tc := range []struct {
		name     string
		cs       []Counter
		admitted int
		denied   int
	}{
		{"group G, user U above G", []Counter{groupCounter(k, 2, 10, 3), userCounter(k, 2, 5)}, 3, 0},
		{"group G, user U below G", []Counter{groupCounter(k, 3, 10, 5), userCounter(k, 3, 2)}, 2, 1},
		{"override O replaces G", []Counter{groupCounter(k, 5, 10, 4), userCounter(k, 5, 10)}, 4, 0},
		{"key without group", []Counter{userCounter(k, 6, 3)}, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { b.fill(t, tc.cs, tc.admitted, tc.denied) })
	}
	t.Run("override 0 exempts from the group, user U still applies", func(t *testing.T) {
		cs := []Counter{userCounter(k, 4, 2)}
		b.fill(t, cs, 2, 0)
		if n := b.count(t, k.UserGroup(4, 10)); n != 0 {
			t.Fatalf("group counter of an exempt user = %d, want 0 (not counted)", n)
		}
	})
	t.Run("user limit is a cap across groups and keys", func(t *testing.T) {
		g1 := []Counter{groupCounter(k, 7, 1, 3), userCounter(k, 7, 5)}
		g2 := []Counter{groupCounter(k, 7, 2, 3), userCounter(k, 7, 5)}
		noGroup := []Counter{userCounter(k, 7, 5)}
		b.fill(t, g1, 3, 0)
		b.admit(t, g2, 1)
		b.admit(t, noGroup, 1)
		b.refuse(t, g2, 1)
		b.refuse(t, noGroup, 0)
		if got := b.readCounts(t, []Counter{g1[0], g2[0], g1[1]}); got[0] != 3 || got[1] != 1 || got[2] != 5 {
			t.Fatalf("counts group1, group2, user = %v, want [3 1 5]", got)
		}
	})
	t.Run("route zone limits join the same step", func(t *testing.T) {
		cs := []Counter{groupCounter(k, 8, 10, 10), userCounter(k, 8, 10), zoneUserCounter(k, "expensive", 8, 2)}
		b.fill(t, cs, 2, 2)
		// Another route without the zone is unaffected.
		b.admit(t, cs[:2], 1)
		perKey1 := []Counter{userCounter(k, 9, 10), zoneKeyCounter(k, "chat", 9, 1, 1)}
		perKey2 := []Counter{userCounter(k, 9, 10), zoneKeyCounter(k, "chat", 9, 2, 1)}
		b.fill(t, perKey1, 1, 1)
		b.admit(t, perKey2, 1)
	})
	t.Run("several full counters: the first refuses", func(t *testing.T) {
		cs := []Counter{userCounter(k, 11, 1), groupCounter(k, 11, 10, 1)}
		b.fill(t, cs, 1, 0)
		rev := []Counter{cs[1], cs[0]}
		b.refuse(t, rev, 0)
	})
	t.Run("lowered limit refuses at once, raised limit admits", func(t *testing.T) {
		cs := []Counter{userCounter(k, 12, 3)}
		b.admit(t, cs, 2)
		b.refuse(t, []Counter{userCounter(k, 12, 2)}, 0)
		b.fill(t, cs, 1, 0)
		b.admit(t, []Counter{userCounter(k, 12, 4)}, 1)
	})
}
