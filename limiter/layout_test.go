package limiter

import (
	"slices"
	"testing"
)

func TestSplitCounterKey(t *testing.T) {
	keys := Keys{Prefix: "rpm:0123:c:"}
	for _, tc := range []struct{ key, hash, field string }{
		{keys.User(7), "rpm:0123:c:{u7}", ":user"},
		{keys.UserGroup(7, 2), "rpm:0123:c:{u7}", ":group:2"},
		{keys.ZoneUser("img", 7), "rpm:0123:c:{u7}", ":zone:img:user"},
		{keys.ZoneKey("a{b}", 7, 3), "rpm:0123:c:{u7}", ":zone:a{b}:key:3"},
		{"plain", "plain", ""},
		{"empty{}tag", "empty{}tag", ""},
		{"open{only", "open{only", ""},
	} {
		hash, field := SplitCounterKey(tc.key)
		if hash != tc.hash || field != tc.field {
			t.Errorf("SplitCounterKey(%q) = %q, %q; want %q, %q", tc.key, hash, field, tc.hash, tc.field)
		}
		if !IsCounterField(field) {
			t.Errorf("%q: field %q is a field of the hash itself", tc.key, field)
		}
		if clusterSlot(hash) != clusterSlot(tc.key) {
			t.Errorf("%q: hash %q in slot %d, the key in %d", tc.key, hash, clusterSlot(hash), clusterSlot(tc.key))
		}
	}
}

// TestCounterLayout: each hash once, each of its fields once, the
// counters numbered hash by hash as the scripts read them.
func TestCounterLayout(t *testing.T) {
	keys := Keys{Prefix: "p:"}
	var l counterLayout
	places := []place{
		l.add(keys.User(1)), l.add(keys.UserGroup(1, 1)), l.add(keys.User(2)),
		l.add(keys.UserGroup(1, 2)), l.add(keys.User(1)),
	}
	args := l.appendArgs(nil)
	// Two lists of fields; two runs of one hash each.
	want := []any{2, 3, ":user", ":group:1", ":group:2", 1, ":user", 2, 1, 1, 1, 2}
	if !slices.Equal(args, want) || !slices.Equal(l.hashes, []string{"p:{u1}", "p:{u2}"}) {
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

// TestCounterLayoutSharesFieldLists: hashes with the same fields share
// one list, and consecutive ones one run; wholeHash recognises a check
// whose counters are all of one hash's fields, in order.
func TestCounterLayoutSharesFieldLists(t *testing.T) {
	keys := Keys{Prefix: "p:"}
	var l counterLayout
	var checks [][]place
	for _, uid := range []int64{1, 2, 3, 4, 5} {
		check := []place{l.add(keys.User(uid))}
		if uid != 4 {
			check = append(check, l.add(keys.UserGroup(uid, 1)))
		}
		checks = append(checks, check)
	}
	partial := []place{l.add(keys.UserGroup(2, 1))}
	swapped := []place{l.add(keys.UserGroup(3, 1)), l.add(keys.User(3))}
	args := l.appendArgs(nil)
	want := []any{2, 2, ":user", ":group:1", 1, ":user", 3, 3, 1, 1, 2, 1, 1}
	if !slices.Equal(args, want) {
		t.Fatalf("args %v, want %v", args, want)
	}
	for i, check := range checks {
		if h, ok := l.wholeHash(check); !ok || h != i+1 {
			t.Errorf("check %d: wholeHash = %d, %v; want %d, true", i, h, ok, i+1)
		}
	}
	for name, check := range map[string][]place{"partial": partial, "swapped": swapped, "none": nil} {
		if h, ok := l.wholeHash(check); ok {
			t.Errorf("%s: wholeHash = %d, true; want false", name, h)
		}
	}
}
