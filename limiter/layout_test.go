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
	want := []any{2, 3, ":user", ":group:1", ":group:2", 1, ":user"}
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
