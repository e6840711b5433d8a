package limiter

import (
	"slices"
	"testing"
	"time"
)

func TestCounterPlace(t *testing.T) {
	keys := Keys{Prefix: "rpm:0123:c:"}
	for _, tc := range []struct{ key, hash, field string }{
		{keys.User(7), "rpm:0123:c:counts", "{u7}:user"},
		{keys.UserGroup(7, 2), "rpm:0123:c:counts", "{u7}:group:2"},
		{keys.ZoneUser("img", 7), "rpm:0123:c:counts", "{u7}:zone:img:user"},
		{keys.ZoneKey("a{b}", 7, 3), "rpm:0123:c:counts", "{u7}:zone:a{b}:key:3"},
		{"plain", "plain", ""},
		{"empty{}tag", "empty{}tag", ""},
		{"open{only", "open{only", ""},
	} {
		hash, field := CounterPlace(tc.key, false)
		if hash != tc.hash || field != tc.field {
			t.Errorf("CounterPlace(%q, false) = %q, %q; want %q, %q", tc.key, hash, field, tc.hash, tc.field)
		}
		if !IsCounterField(field) {
			t.Errorf("%q: field %q is a field of the hash itself", tc.key, field)
		}
		// In a Cluster: the bucket of the key's slot, the same field.
		hash, clusterField := CounterPlace(tc.key, true)
		if clusterField != field || clusterSlot(hash) != clusterSlot(tc.key) {
			t.Errorf("CounterPlace(%q, true) = %q (slot %d), %q; want slot %d, field %q", tc.key, hash, clusterSlot(hash), clusterField, clusterSlot(tc.key), field)
		}
	}
}

// TestSlotTags: every slot has a tag, and the tag hashes to its slot.
func TestSlotTags(t *testing.T) {
	for slot := range uint16(16384) {
		tag := slotTag(slot)
		if tag == "" || crc16(tag)%16384 != slot || clusterSlot("x{"+tag+"}") != slot {
			t.Fatalf("slot %d: tag %q hashes to %d", slot, tag, crc16(tag)%16384)
		}
	}
}

// TestCounterLayout: each bucket once, each of its fields once, the
// counters numbered bucket by bucket as the scripts read them.
func TestCounterLayout(t *testing.T) {
	a, b := Keys{Prefix: "a:"}, Keys{Prefix: "b:"}
	var l counterLayout
	places := []place{
		l.add(a.User(1)), l.add(a.UserGroup(1, 1)), l.add(b.User(2)),
		l.add(a.UserGroup(1, 2)), l.add(a.User(1)),
	}
	args := l.appendArgs(nil)
	// Two lists of fields; two runs of one bucket each.
	want := []any{2, 3, "{u1}:user", "{u1}:group:1", "{u1}:group:2", 1, "{u2}:user", 2, 1, 1, 1, 2}
	if !slices.Equal(args, want) || !slices.Equal(l.hashes, []string{"a:counts", "b:counts"}) {
		t.Fatalf("keys %v, args %v; want args %v", l.hashes, args, want)
	}
	var got []int
	for _, p := range places {
		got = append(got, l.index(p))
	}
	if !slices.Equal(got, []int{1, 2, 4, 3, 1}) || l.counters() != 4 {
		t.Fatalf("numbers %v of %d counters, want [1 2 4 3 1] of 4", got, l.counters())
	}
}

// TestCounterLayoutRuns: run recognises a check whose counters are
// consecutive in the layout, in order, and gives the number of the first.
func TestCounterLayoutRuns(t *testing.T) {
	keys := Keys{Prefix: "p:"}
	l := counterLayout{cluster: true}
	var checks [][]place
	for _, uid := range []int64{1, 2, 3} {
		checks = append(checks, []place{l.add(keys.User(uid)), l.add(keys.UserGroup(uid, 1))})
	}
	partial := []place{l.add(keys.UserGroup(2, 1))}
	swapped := []place{l.add(keys.UserGroup(3, 1)), l.add(keys.User(3))}
	gap := []place{l.add(keys.User(1)), l.add(keys.User(2))}
	l.appendArgs(nil)
	for i, check := range checks {
		first, ok := l.run(check)
		// Users 1 to 3 may share a slot's bucket or not; either way their
		// counters come in pairs in the numbering.
		if !ok || first != l.index(check[0]) || l.index(check[1]) != first+1 {
			t.Errorf("check %d: run = %d, %v; want %d, true", i, first, ok, l.index(check[0]))
		}
	}
	if first, ok := l.run(partial); !ok || first != l.index(partial[0]) {
		t.Errorf("one counter: run = %d, %v; want %d, true", first, ok, l.index(partial[0]))
	}
	for name, check := range map[string][]place{"swapped": swapped, "gap": gap, "none": nil} {
		if first, ok := l.run(check); ok {
			t.Errorf("%s: run = %d, true; want false", name, first)
		}
	}
}

// TestAppendGroups: a group of one check without slot sets whose counters
// follow the previous group's goes in the short form, -m and the limits;
// consecutive counters otherwise by the first's number, others one by one.
func TestAppendGroups(t *testing.T) {
	keys := Keys{Prefix: "p:"}
	check := func(cs ...Counter) *pendingCheck { return &pendingCheck{counters: cs} }
	u3 := userCounter(keys, 3, 30)
	groups := [][]*pendingCheck{
		{check(userCounter(keys, 1, 10), groupCounter(keys, 1, 1, 11))},
		{check(userCounter(keys, 1, 10), groupCounter(keys, 1, 2, 12))},
		{check(userCounter(keys, 2, 20), groupCounter(keys, 2, 1, 21))},
		{check(userCounter(keys, 1, 10))},
		{check(u3), check(u3)},
	}
	var l counterLayout
	var places []place
	for _, g := range groups {
		for _, c := range g[0].counters {
			places = append(places, l.add(c.Key))
		}
	}
	l.appendArgs(nil)
	args, slotKeys := appendGroups(nil, nil, &l, groups, places)
	want := []any{
		-2, int64(10), int64(11), // u1 user 1, u1 group 1 2: short
		1, 0, 2, 0, 1, int64(10), 3, int64(12), // u1 user 1, u1 group 2 3: one by one
		-2, int64(20), int64(21), // u2 4 5, after 3: short
		1, 0, 1, 1, int64(10), // u1 user 1 again: by its number
		2, 0, 1, 6, int64(30), // two checks of u3 6: a group of 2
	}
	if !slices.Equal(args, want) || len(slotKeys) != 0 {
		t.Fatalf("args %v, slot keys %v; want %v, none", args, slotKeys, want)
	}
}

// TestRedisClock: the window and the time left in it from TIME's seconds
// and microseconds.
func TestRedisClock(t *testing.T) {
	for _, tc := range []struct {
		sec, usec, window int64
		resetIn           time.Duration
	}{
		{60, 500000, 1, 59500 * time.Millisecond},
		{119, 999999, 1, time.Millisecond},
		{120, 0, 2, time.Minute},
		{1764806400, 1500, 29413440, time.Minute - time.Millisecond},
	} {
		w, r := redisClock(tc.sec, tc.usec)
		if w != tc.window || r != tc.resetIn {
			t.Errorf("redisClock(%d, %d) = %d, %v; want %d, %v", tc.sec, tc.usec, w, r, tc.window, tc.resetIn)
		}
	}
}
