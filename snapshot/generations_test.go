package snapshot

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ForgetKey, ForgetUser and ForgetGroup drop exactly the snapshots that
// ForKey, ForUser and ForGroup match: the next read of those loads again,
// the others stay hits, and a dropped snapshot is not served stale while
// the store fails.
func TestCacheForgetByID(t *testing.T) {
	gid := int64(100)
	snaps := map[string]*Snapshot{
		"a": {Version: Version, APIKeyID: 1, UserID: 10, GroupID: &gid, Status: "active"},
		"b": {Version: Version, APIKeyID: 2, UserID: 10, GroupID: &gid, Status: "active"},
		"c": {Version: Version, APIKeyID: 3, UserID: 11, GroupID: &gid, Status: "active"},
		"d": {Version: Version, APIKeyID: 4, UserID: 12, Status: "active"},
	}
	var (
		mu    sync.Mutex
		fail  error
		loads = map[string]int{}
		total atomic.Int64
	)
	c := NewCache(CacheConfig{L1Size: 100, L1TTL: time.Hour, NegativeTTL: time.Minute, StaleIfError: time.Hour},
		nil, func(_ context.Context, h string) (*Snapshot, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail != nil {
				return nil, fail
			}
			loads[h]++
			total.Add(1)
			return snaps[h], nil
		}, CacheHooks{})
	ctx := context.Background()
	// readAll reads every key and returns the ones that were loaded.
	readAll := func() string {
		t.Helper()
		mu.Lock()
		before := map[string]int{}
		for k, v := range loads {
			before[k] = v
		}
		mu.Unlock()
		for _, k := range []string{"a", "b", "c", "d"} {
			if _, err := c.Get(ctx, k); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		var loaded string
		for _, k := range []string{"a", "b", "c", "d"} {
			if loads[k] != before[k] {
				loaded += k
			}
		}
		return loaded
	}

	if got := readAll(); got != "abcd" {
		t.Fatalf("first reads loaded %q", got)
	}
	for _, step := range []struct {
		forget func()
		want   string
	}{
		{func() {}, ""},
		{func() { c.ForgetUser(10) }, "ab"},
		{func() { c.ForgetGroup(100) }, "abc"},
		{func() { c.ForgetKey(4) }, "d"},
		{func() { c.ForgetUser(99); c.ForgetGroup(99); c.ForgetKey(99) }, ""},
	} {
		step.forget()
		if got := readAll(); got != step.want {
			t.Fatalf("loaded %q, want %q", got, step.want)
		}
	}

	mu.Lock()
	fail = errors.New("store down")
	mu.Unlock()
	c.ForgetUser(11)
	if _, err := c.Get(ctx, "c"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a forgotten snapshot with the store down: %v, want ErrUnavailable", err)
	}
	if _, err := c.Get(ctx, "d"); err != nil {
		t.Fatalf("another key with the store down: %v", err)
	}
}

// With 100,000 entries ForgetUser costs what it costs with one, where
// ForgetL1(ForUser) looks at every entry.
func TestCacheForgetByIDDoesNotScan(t *testing.T) {
	const n = 100_000
	c := NewCache(CacheConfig{L1Size: 1 << 20, L1TTL: time.Hour, NegativeTTL: time.Minute, StaleIfError: time.Hour},
		nil, nil, CacheHooks{})
	for i := range n {
		c.setL1(userHash(i), userSnapshot(i))
	}
	start := time.Now()
	for i := range 1000 {
		c.ForgetUser(int64(i))
	}
	byID := time.Since(start) / 1000
	start = time.Now()
	c.ForgetL1(ForUser(1000))
	scan := time.Since(start)
	t.Logf("ForgetUser: %v each; ForgetL1(ForUser): %v, with %d entries", byID, scan, n)
	if byID*100 > scan {
		t.Errorf("ForgetUser took %v, not far below a scan's %v", byID, scan)
	}
	// The forgotten users miss, the others hit.
	misses := 0
	c.load = func(context.Context, string) (*Snapshot, error) { misses++; return userSnapshot(0), nil }
	for i := 990; i < 1010; i++ {
		if _, err := c.Get(context.Background(), userHash(i)); err != nil {
			t.Fatal(err)
		}
	}
	if misses != 11 { // users 990 … 999 and 1000
		t.Fatalf("%d misses, want 11", misses)
	}
}
