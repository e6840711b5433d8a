package snapshot

import "testing"

// A compact copy is one allocation, the snapshot and its user together,
// once its group and strings are shared: what an L1 entry adds for the
// garbage collector to mark is that object (and the entry and otter's node
// and key), not one object per sub-snapshot.
func TestL1CompactCopyIsOneAllocation(t *testing.T) {
	var in interner
	s := userSnapshot(12)
	in.compact(s) // shares the group and the strings
	if n := testing.AllocsPerRun(100, func() { in.compact(s) }); n != 1 {
		t.Fatalf("%v allocations per compact copy, want 1", n)
	}
}
