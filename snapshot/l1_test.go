package snapshot

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"
)

// inL1 returns what L1 holds for keyHash, fresh or not.
func inL1(c *Cache, keyHash string) (*Snapshot, bool) {
	k := l1Key(keyHash)
	e, ok := c.l1.get(&k, c.clock())
	return e.snap, ok
}

// inL1Slot lets f change keyHash's L1 slot in place, as a new write of it
// (so the shard's last unpacked snapshot is not served for it).
func inL1Slot(t testing.TB, c *Cache, keyHash string, f func(*l1Slot)) {
	t.Helper()
	k := l1Key(keyHash)
	sh := c.l1.shard(&k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.index[k]
	if !ok {
		t.Fatalf("%s is not in L1", keyHash)
	}
	f(&sh.slots[i])
	sh.writes++
	sh.slots[i].write = sh.writes
}

func l1TestCache(size int) *Cache {
	return NewCache(CacheConfig{L1Size: size, L1TTL: time.Hour, NegativeTTL: time.Minute, StaleIfError: time.Hour},
		nil, nil, CacheHooks{})
}

// packedSnapshot is fullSnapshot without its IP lists, so it packs; every
// field is set, so a field added to Snapshot, User or Group that pack
// leaves out fails TestL1KeepsEveryField.
func packedSnapshot() *Snapshot {
	s := fullSnapshot()
	s.IPWhitelist, s.IPBlacklist, s.ip = nil, nil, nil
	s.NotFound = true // not a real combination; packs like any other
	return s
}

// What L1 returns is the snapshot it was given, field for field, packed or
// not, and the given snapshot is left alone; keys of one group share its
// sub-snapshot.
func TestL1KeepsEveryField(t *testing.T) {
	for _, v := range []reflect.Value{reflect.ValueOf(*packedSnapshot()), reflect.ValueOf(*packedSnapshot().User),
		reflect.ValueOf(*packedSnapshot().Group)} {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Name == "IPWhitelist" || f.Name == "IPBlacklist" {
				continue // a snapshot with them is kept unpacked, tested below
			}
			if f.IsExported() && v.Field(i).IsZero() {
				t.Fatalf("%s.%s is not set in the test snapshot: set it, and pack it", v.Type().Name(), f.Name)
			}
		}
	}
	c := l1TestCache(100)
	for name, orig := range map[string]*Snapshot{"packed": packedSnapshot(), "with IP lists": fullSnapshot()} {
		before, _ := Encode(orig)
		c.setL1(name, orig)
		got, ok := inL1(c, name)
		if !ok {
			t.Fatalf("%s: not in L1", name)
		}
		if after, _ := Encode(got); string(after) != string(before) {
			t.Fatalf("%s: L1 returned\n %s\nwant %s", name, after, before)
		}
		if again, _ := Encode(orig); string(again) != string(before) {
			t.Fatalf("%s: the original changed: %s", name, again)
		}
		for _, ip := range []string{"10.9.9.9", "10.1.2.3", "192.0.2.1", "::1"} {
			a := netip.MustParseAddr(ip)
			if got.IPAllowed(a) != orig.IPAllowed(a) {
				t.Errorf("%s: IPAllowed(%s): L1's %v, original %v", name, ip, got.IPAllowed(a), orig.IPAllowed(a))
			}
		}
	}
	a, b := packedSnapshot(), packedSnapshot()
	b.APIKeyID, b.UserID, b.User.ID = 21, 22, 22
	changed := packedSnapshot()
	changed.Group.RPMLimit = 601
	c.setL1("a", a)
	c.setL1("b", b)
	c.setL1("changed", changed)
	ga, _ := inL1(c, "a")
	gb, _ := inL1(c, "b")
	gc, _ := inL1(c, "changed")
	if ga.Group != gb.Group || ga.User == gb.User {
		t.Error("two keys of one group do not share the group (or share a user)")
	}
	if gc.Group == ga.Group || gc.Group.RPMLimit != 601 {
		t.Error("a group with other content shares the old sub-snapshot")
	}
}

// L1's slots and index hold no pointer: the garbage collector scans
// neither, however many entries there are (runtime/metrics counts the
// scannable heap).
func TestL1IsNotScanned(t *testing.T) {
	if n := pointerFields(reflect.TypeFor[l1Slot]()); n != "" {
		t.Fatalf("l1Slot has a pointer: %s", n)
	}
	const n = 100_000
	c := l1TestCache(defaultL1Size)
	scannable := func() uint64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := scannable()
	for i := range n {
		c.setL1(userHash(1_000_000+i), userSnapshot(1_000_000+i))
	}
	after := scannable()
	added := int64(after) - int64(before)
	t.Logf("%d entries add %d bytes of scannable heap", n, added)
	if added > 1<<20 {
		t.Errorf("%d entries add %d bytes of heap the GC scans, want at most 1 MiB", n, added)
	}
	runtime.KeepAlive(c)
}

// pointerFields names a field of t that holds a pointer, or returns "".
func pointerFields(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if n := pointerFields(t.Field(i).Type); n != "" {
				return t.Field(i).Name + "." + n
			}
		}
		return ""
	case reflect.Array:
		return pointerFields(t.Elem())
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return ""
	}
	return t.String()
}

// A key read again before another key of its shard gets the snapshot the
// last read unpacked, with no allocation; a new write of the key, another
// key in its slot, or a cleared table is never served that snapshot.
func TestL1ServesTheShardsLastUnpackedSnapshot(t *testing.T) {
	c := l1TestCache(100) // one shard
	c.setL1("a", userSnapshot(1))
	first, _ := inL1(c, "a")
	if again, _ := inL1(c, "a"); again != first {
		t.Error("a second read of the same key unpacked its snapshot again")
	}
	if n := testing.AllocsPerRun(100, func() { inL1(c, "a") }); n != 0 {
		t.Errorf("a repeated read allocates %v times, want 0", n)
	}

	c.setL1("a", userSnapshot(2))
	if s, _ := inL1(c, "a"); s == first || s.UserID != 2 {
		t.Errorf("after a new write the key reads user %d (same snapshot: %v), want user 2", s.UserID, s == first)
	}

	c.setL1("b", userSnapshot(3))
	if s, _ := inL1(c, "b"); s.UserID != 3 {
		t.Errorf("another key of the shard reads user %d, want 3", s.UserID)
	}
	if s, _ := inL1(c, "a"); s.UserID != 2 {
		t.Errorf("the first key reads user %d after another key's read, want 2", s.UserID)
	}

	// The same slot, reused by another key after a drop.
	c.l1.invalidate("a")
	c.setL1("c", userSnapshot(4))
	if s, _ := inL1(c, "c"); s.UserID != 4 {
		t.Errorf("a key written into a freed slot reads user %d, want 4", s.UserID)
	}
	// A cleared table numbers its slots from 0 again.
	c.l1.invalidateAll()
	c.setL1("d", userSnapshot(5))
	if s, _ := inL1(c, "d"); s.UserID != 5 {
		t.Errorf("a key written after the table was cleared reads user %d, want 5", s.UserID)
	}
}

// A full L1 evicts the entries not read since the CLOCK hand last passed
// and keeps those in use.
func TestL1EvictsEntriesNotRead(t *testing.T) {
	const size = 100
	c := l1TestCache(size)
	key := func(i int) string { return "k" + strconv.Itoa(i) }
	for i := range size {
		c.setL1(key(i), userSnapshot(i))
	}
	for i := range size / 2 {
		if _, ok := inL1(c, key(i)); !ok {
			t.Fatalf("%s left L1 before it was full", key(i))
		}
	}
	for i := size; i < size+size/2; i++ {
		c.setL1(key(i), userSnapshot(i))
	}
	if n := c.l1.len(); n != size {
		t.Fatalf("L1 holds %d entries, want %d", n, size)
	}
	for i := range size + size/2 {
		_, ok := inL1(c, key(i))
		if want := i < size/2 || i >= size; ok != want {
			t.Errorf("%s in L1: %v, want %v", key(i), ok, want)
		}
	}
}

// Entries past their stay (TTL and stale_if_error) are not served and are
// freed by later writes, so L1 does not keep keys no one reads.
func TestL1FreesExpiredEntries(t *testing.T) {
	c := l1TestCache(100)
	clk := &fakeClock{}
	useClock(c, clk)
	for i := range 10 {
		c.setL1("old"+strconv.Itoa(i), userSnapshot(i))
	}
	clk.advance(2*time.Hour + time.Second) // past L1TTL + StaleIfError
	if _, ok := inL1(c, "old0"); ok {
		t.Fatal("an entry past its stay is still served")
	}
	// Each write checks two slots: ten cover the ten old ones.
	for i := range 10 {
		c.setL1("new"+strconv.Itoa(i), userSnapshot(i))
	}
	if n := c.l1.len(); n != 10 {
		t.Fatalf("L1 holds %d entries after 10 writes, want the 10 new ones", n)
	}
}

// A snapshot that would need a table entry past maxShared is kept as it
// is, and returned whole; the tables' earlier entries stay shared.
func TestL1KeepsSnapshotsPastFullTables(t *testing.T) {
	c := l1TestCache(100)
	for i := range maxShared {
		g := Group{ID: int64(i), Name: "g" + strconv.Itoa(i), Status: "active"}
		if id := c.l1.pack.groups.id(g); id == 0 {
			t.Fatalf("group table full after %d groups, want %d", i, maxShared)
		}
	}
	s := packedSnapshot()
	s.Group.Name = "one group too many"
	before, _ := Encode(s)
	c.setL1("k", s)
	got, ok := inL1(c, "k")
	if !ok {
		t.Fatal("the snapshot past the full table is not in L1")
	}
	if after, _ := Encode(got); string(after) != string(before) {
		t.Fatalf("L1 returned\n %s\nwant %s", after, before)
	}
	if _, packs := c.l1.pack.pack(s); packs {
		t.Fatal("a snapshot with a new group packed into a full table")
	}
}

// Reads, writes, renewals and invalidations of one L1 from many
// goroutines at once (run with -race): every read finds the snapshot of
// its key or nothing, never another key's.
func TestL1Concurrent(t *testing.T) {
	c := l1TestCache(64) // small: writes evict
	const keys, workers, ops = 128, 8, 2000
	key := func(i int) string { return userHash(i) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range ops {
				i := rng.IntN(keys)
				switch rng.IntN(10) {
				case 0, 1, 2:
					c.setL1(key(i), userSnapshot(i))
				case 3:
					c.l1.invalidate(key(i))
				case 4:
					c.renewL1(key(i), 1)
				case 5:
					if rng.IntN(100) == 0 {
						c.ForgetL1(ForUser(int64(i)))
					}
				default:
					if s, ok := inL1(c, key(i)); ok && s.UserID != int64(i) {
						t.Errorf("%s: L1 returned user %d's snapshot", key(i), s.UserID)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := c.l1.len(); n > 64 {
		t.Errorf("L1 holds %d entries, more than its size of 64", n)
	}
}
