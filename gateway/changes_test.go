package gateway

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

// memoryWritable is a writable store that records the changes it is asked
// for and fails those of id 404 with ErrNotFound.
type memoryWritable struct {
	mu      sync.Mutex
	changes []string
}

func (m *memoryWritable) record(what string, id int64) error {
	if id == 404 {
		return store.ErrNotFound
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.changes = append(m.changes, what)
	return nil
}

func (m *memoryWritable) ReplaceGroupOverrides(_ context.Context, gid int64, _ []Override) error {
	return m.record("replace", gid)
}
func (m *memoryWritable) ClearGroupOverrides(_ context.Context, gid int64) (int64, error) {
	return 2, m.record("clear", gid)
}
func (m *memoryWritable) SetOverride(_ context.Context, uid, _ int64, _ *int64) error {
	return m.record("set", uid)
}
func (m *memoryWritable) UpdateUser(_ context.Context, id int64, _ Patch) error {
	return m.record("user", id)
}
func (m *memoryWritable) UpdateGroup(_ context.Context, id int64, _ Patch) error {
	return m.record("group", id)
}
func (m *memoryWritable) UpdateKey(_ context.Context, id int64, _ Patch) error {
	return m.record("key", id)
}

// invalidations records what a gateway invalidated.
type invalidations struct {
	mu  sync.Mutex
	got []string
}

func (r *invalidations) hook(scope Scope, id int64, origin string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, string(scope)+":"+strconv.FormatInt(id, 10)+":"+origin)
}

func (r *invalidations) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

func newChangeGateway(t *testing.T, w store.Writable) (*Gateway, *invalidations) {
	t.Helper()
	rec := &invalidations{}
	g, err := New(Config{Source: &countingSource{}, Writable: w, Limiter: limiter.NewLocal(time.Now),
		Cache:        snapshot.CacheConfig{L1Size: 10, L1TTL: time.Minute},
		OnInvalidate: rec.hook})
	if err != nil {
		t.Fatal(err)
	}
	return g, rec
}

// TestChangesInvalidateWhatTheyReach: every change writes once and then
// invalidates what it reaches; a failed write invalidates nothing.
func TestChangesInvalidateWhatTheyReach(t *testing.T) {
	ctx := context.Background()
	w := &memoryWritable{}
	g, rec := newChangeGateway(t, w)
	v := int64(5)
	for _, tc := range []struct {
		name   string
		change func(id int64) error
		write  string
		inval  string
	}{
		{"set override", func(id int64) error { return g.SetOverride(ctx, id, 3, &v) }, "set", "user:7:admin"},
		{"replace overrides", func(id int64) error { return g.ReplaceGroupOverrides(ctx, id, nil) }, "replace", "group:7:admin"},
		{"clear overrides", func(id int64) error { _, err := g.ClearOverrides(ctx, id); return err }, "clear", "group:7:admin"},
		{"patch user", func(id int64) error { return g.PatchUser(ctx, id, Patch{RPMLimit: &v}) }, "user", "user:7:admin"},
		{"patch group", func(id int64) error { return g.PatchGroup(ctx, id, Patch{RPMLimit: &v}) }, "group", "group:7:admin"},
		{"patch key", func(id int64) error { return g.PatchKey(ctx, id, Patch{}) }, "key", "key:7:admin"},
	} {
		w.changes = nil
		if err := tc.change(7); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(w.changes, []string{tc.write}) {
			t.Errorf("%s: writes %v, want [%s]", tc.name, w.changes, tc.write)
		}
		if got := rec.take(); !slices.Equal(got, []string{tc.inval}) {
			t.Errorf("%s: invalidations %v, want [%s]", tc.name, got, tc.inval)
		}
		if err := tc.change(404); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of an unknown id: %v, want ErrNotFound", tc.name, err)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("%s: a failed write invalidated %v", tc.name, got)
		}
	}
}

// TestChangesWithoutWritableStore: without a writable store (the keys
// file) every change is ErrReadOnly and invalidates nothing.
func TestChangesWithoutWritableStore(t *testing.T) {
	ctx := context.Background()
	g, rec := newChangeGateway(t, nil)
	v := int64(1)
	_, clearErr := g.ClearOverrides(ctx, 1)
	for name, err := range map[string]error{
		"SetOverride":           g.SetOverride(ctx, 1, 1, &v),
		"ReplaceGroupOverrides": g.ReplaceGroupOverrides(ctx, 1, nil),
		"ClearOverrides":        clearErr,
		"PatchUser":             g.PatchUser(ctx, 1, Patch{RPMLimit: &v}),
		"PatchGroup":            g.PatchGroup(ctx, 1, Patch{RPMLimit: &v}),
		"PatchKey":              g.PatchKey(ctx, 1, Patch{}),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s = %v, want ErrReadOnly", name, err)
		}
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("refused changes invalidated %v", got)
	}
}
