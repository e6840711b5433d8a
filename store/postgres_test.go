package store_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// queryCounter is a pgx tracer that counts queries.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestLoadSnapshot(t *testing.T) {
	counter := &queryCounter{}
	pool, _ := storetest.NewSchemaConfig(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = counter })
	ctx := context.Background()
	st := store.NewPostgres(pool)

	uid := storetest.SeedUser(t, pool, 60)
	gid := storetest.SeedGroup(t, pool, "default", 30)
	other := storetest.SeedGroup(t, pool, "other", 20)
	storetest.SeedOverride(t, pool, uid, gid, 10)
	storetest.SeedOverride(t, pool, uid, other, 0)
	withOverride, rawWith := storetest.SeedKey(t, pool, uid, &gid)
	noGroup, rawNoGroup := storetest.SeedKey(t, pool, uid, nil)
	uid2 := storetest.SeedUser(t, pool, 5)
	noOverride, rawNoOverride := storetest.SeedKey(t, pool, uid2, &gid)
	storetest.Exec(t, pool, `update rpm_api_keys set ip_whitelist = '{10.0.0.0/8}', ip_blacklist = '{10.1.2.3}',
		quota = 2.5, quota_used = 1, expires_at = '2030-01-02T03:04:05Z' where id = $1`, withOverride)

	// loadInOneQuery loads raw's snapshot and checks that it took one query.
	loadInOneQuery := func(t *testing.T, raw string) *snapshot.Snapshot {
		t.Helper()
		counter.n.Store(0)
		s, err := st.LoadSnapshot(ctx, store.HashKey(raw))
		if err != nil {
			t.Fatal(err)
		}
		if n := counter.n.Load(); n != 1 {
			t.Errorf("LoadSnapshot issued %d queries, want 1", n)
		}
		return s
	}
	t.Run("with override", func(t *testing.T) {
		s := loadInOneQuery(t, rawWith)
		exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		want := &snapshot.Snapshot{
			Version: snapshot.Version, APIKeyID: withOverride, UserID: uid, GroupID: &gid, Status: "active",
			IPWhitelist: []string{"10.0.0.0/8"}, IPBlacklist: []string{"10.1.2.3"},
			Quota: 2.5, QuotaUsed: 1, ExpiresAt: &exp,
			User:  &snapshot.User{ID: uid, Status: "active", RPMLimit: 60, UserGroupRPMOverride: testutil.Ptr(int64(10))},
			Group: &snapshot.Group{ID: gid, Name: "default", Status: "active", RPMLimit: 30},
		}
		assertSnapshot(t, s, want)
	})
	t.Run("without override", func(t *testing.T) {
		s := loadInOneQuery(t, rawNoOverride)
		want := &snapshot.Snapshot{
			Version: snapshot.Version, APIKeyID: noOverride, UserID: uid2, GroupID: &gid, Status: "active",
			User:  &snapshot.User{ID: uid2, Status: "active", RPMLimit: 5},
			Group: &snapshot.Group{ID: gid, Name: "default", Status: "active", RPMLimit: 30},
		}
		assertSnapshot(t, s, want)
		b, _ := snapshot.Encode(s)
		if got := string(b); strings.Contains(got, "user_group_rpm_override") {
			t.Errorf("encoded snapshot without override mentions it: %s", got)
		}
	})
	t.Run("key without group", func(t *testing.T) {
		s, err := st.LoadSnapshot(ctx, store.HashKey(rawNoGroup))
		if err != nil {
			t.Fatal(err)
		}
		want := &snapshot.Snapshot{
			Version: snapshot.Version, APIKeyID: noGroup, UserID: uid, Status: "active",
			User: &snapshot.User{ID: uid, Status: "active", RPMLimit: 60},
		}
		assertSnapshot(t, s, want)
	})
	t.Run("many in one query", func(t *testing.T) {
		hashes := []string{store.HashKey(rawNoGroup), store.HashKey("sk-nope"), "zz",
			store.HashKey(rawWith), store.HashKey(rawNoOverride), store.HashKey(rawWith)}
		counter.n.Store(0)
		got, err := st.LoadSnapshots(ctx, hashes)
		if err != nil {
			t.Fatal(err)
		}
		if n := counter.n.Load(); n != 1 {
			t.Errorf("LoadSnapshots issued %d queries, want 1", n)
		}
		if len(got) != len(hashes) {
			t.Fatalf("%d snapshots for %d keys", len(got), len(hashes))
		}
		for i, h := range hashes {
			want, err := st.LoadSnapshot(ctx, h)
			switch {
			case errors.Is(err, store.ErrNotFound):
				if got[i] != nil {
					t.Errorf("key %d (unknown): %+v, want nil", i, got[i])
				}
			case err != nil:
				t.Fatal(err)
			case got[i] == nil:
				t.Errorf("key %d: nil, want the snapshot of key %d", i, want.APIKeyID)
			default:
				assertSnapshot(t, got[i], want)
			}
		}
	})
	t.Run("unknown", func(t *testing.T) {
		for _, h := range []string{store.HashKey("sk-nope"), "zz", "", store.HashKey("x")[:63] + "g"} {
			counter.n.Store(0)
			if _, err := st.LoadSnapshot(ctx, h); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("LoadSnapshot(%q) = %v, want ErrNotFound", h, err)
			}
		}
	})
}

func assertSnapshot(t *testing.T, got, want *snapshot.Snapshot) {
	t.Helper()
	g, _ := snapshot.Encode(got)
	w, _ := snapshot.Encode(want)
	if string(g) != string(w) {
		t.Fatalf("snapshot:\n got %s\nwant %s", g, w)
	}
}

func TestKeyHashes(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()

	u1 := storetest.SeedUser(t, pool, 0)
	u2 := storetest.SeedUser(t, pool, 0)
	g := storetest.SeedGroup(t, pool, "", 0)
	k1, raw1 := storetest.SeedKey(t, pool, u1, &g)
	_, raw2 := storetest.SeedKey(t, pool, u1, nil)
	_, raw3 := storetest.SeedKey(t, pool, u2, &g)
	h1, h2, h3 := store.HashKey(raw1), store.HashKey(raw2), store.HashKey(raw3)

	for _, tc := range []struct {
		scope store.Scope
		id    int64
		want  []string
	}{
		{store.ScopeKey, k1, []string{h1}},
		{store.ScopeUser, u1, []string{h1, h2}},
		{store.ScopeGroup, g, []string{h1, h3}},
		{store.ScopeAll, 0, []string{h1, h2, h3}},
		{store.ScopeUser, 999999, nil},
	} {
		got, err := st.KeyHashes(ctx, tc.scope, tc.id)
		if err != nil {
			t.Fatalf("KeyHashes(%s, %d): %v", tc.scope, tc.id, err)
		}
		if !sameSet(got, tc.want) {
			t.Errorf("KeyHashes(%s, %d) = %v, want %v", tc.scope, tc.id, got, tc.want)
		}
	}
	if _, err := st.KeyHashes(ctx, "bogus", 1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("KeyHashes(bogus) = %v, want ErrInvalid", err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestUserRPM(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()

	u := storetest.SeedUser(t, pool, 60)
	g1 := storetest.SeedGroup(t, pool, "a", 10)
	g2 := storetest.SeedGroup(t, pool, "b", 20)
	g3 := storetest.SeedGroup(t, pool, "c", 30)
	storetest.SeedGroup(t, pool, "unrelated", 40)
	storetest.SeedKey(t, pool, u, &g3)
	storetest.SeedKey(t, pool, u, &g3)
	storetest.SeedKey(t, pool, u, &g1)
	storetest.SeedKey(t, pool, u, nil)
	storetest.SeedOverride(t, pool, u, g2, 0)
	storetest.SeedOverride(t, pool, u, g3, 7)
	if _, err := pool.Exec(ctx, `update rpm_users set concurrency = 5 where id = $1`, u); err != nil {
		t.Fatal(err)
	}

	got, err := st.UserRPM(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	want := &store.UserRPM{UserID: u, RPMLimit: 60, Concurrency: 5, Groups: []store.UserGroup{
		{GroupID: g1, Name: "a", RPMLimit: 10},
		{GroupID: g2, Name: "b", RPMLimit: 20, Override: testutil.Ptr(int64(0))},
		{GroupID: g3, Name: "c", RPMLimit: 30, Override: testutil.Ptr(int64(7))},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("UserRPM = %+v, want %+v", got, want)
	}

	lonely := storetest.SeedUser(t, pool, 3)
	got, err = st.UserRPM(ctx, lonely)
	if err != nil {
		t.Fatal(err)
	}
	if got.RPMLimit != 3 || len(got.Groups) != 0 || got.Groups == nil {
		t.Fatalf("UserRPM(no groups) = %+v", got)
	}
	if _, err := st.UserRPM(ctx, 424242); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UserRPM(unknown) = %v, want ErrNotFound", err)
	}
}

func TestOverrides(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()

	u1 := storetest.SeedUser(t, pool, 0)
	u2 := storetest.SeedUser(t, pool, 0)
	u3 := storetest.SeedUser(t, pool, 0)
	g := storetest.SeedGroup(t, pool, "g", 10)
	empty := storetest.SeedGroup(t, pool, "empty", 10)

	list := func(gid int64) []store.Override {
		t.Helper()
		got, err := st.GroupOverrides(ctx, gid)
		if err != nil {
			t.Fatalf("GroupOverrides(%d): %v", gid, err)
		}
		return got
	}
	expect := func(gid int64, want []store.Override) {
		t.Helper()
		if got := list(gid); !reflect.DeepEqual(got, want) {
			t.Fatalf("GroupOverrides(%d) = %s, want %s", gid, fmtOverrides(got), fmtOverrides(want))
		}
	}

	expect(empty, []store.Override{})
	if _, err := st.GroupOverrides(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GroupOverrides(unknown) = %v", err)
	}

	// SetOverride.
	if err := st.SetOverride(ctx, u1, g, testutil.Ptr(int64(5))); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOverride(ctx, u2, g, testutil.Ptr(int64(0))); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOverride(ctx, u2, g, testutil.Ptr(int64(8))); err != nil {
		t.Fatal(err)
	}
	expect(g, []store.Override{{UserID: u1, RPMOverride: testutil.Ptr(int64(5))}, {UserID: u2, RPMOverride: testutil.Ptr(int64(8))}})
	for _, tc := range []struct {
		uid, gid int64
		v        *int64
		want     error
	}{
		{u1, g, testutil.Ptr(int64(-1)), store.ErrInvalid},
		{u1, g, testutil.Ptr(int64(1 << 40)), store.ErrInvalid},
		{999999, g, testutil.Ptr(int64(1)), store.ErrNotFound},
		{u1, 999999, testutil.Ptr(int64(1)), store.ErrNotFound},
		{999999, g, nil, store.ErrNotFound},
		{u1, 999999, nil, store.ErrNotFound},
	} {
		if err := st.SetOverride(ctx, tc.uid, tc.gid, tc.v); !errors.Is(err, tc.want) {
			t.Errorf("SetOverride(%d, %d, %v) = %v, want %v", tc.uid, tc.gid, tc.v, err, tc.want)
		}
	}
	expect(g, []store.Override{{UserID: u1, RPMOverride: testutil.Ptr(int64(5))}, {UserID: u2, RPMOverride: testutil.Ptr(int64(8))}})
	if err := st.SetOverride(ctx, u1, g, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOverride(ctx, u1, g, nil); err != nil { // clearing twice is fine
		t.Fatal(err)
	}
	expect(g, []store.Override{{UserID: u2, RPMOverride: testutil.Ptr(int64(8))}})

	// ReplaceGroupOverrides.
	if err := st.ReplaceGroupOverrides(ctx, g, []store.Override{
		{UserID: u3, RPMOverride: testutil.Ptr(int64(3))},
		{UserID: u1, RPMOverride: testutil.Ptr(int64(1))},
		{UserID: u2, RPMOverride: nil},
	}); err != nil {
		t.Fatal(err)
	}
	before := []store.Override{{UserID: u1, RPMOverride: testutil.Ptr(int64(1))}, {UserID: u3, RPMOverride: testutil.Ptr(int64(3))}}
	expect(g, before)
	for _, tc := range []struct {
		name    string
		gid     int64
		entries []store.Override
		want    error
	}{
		{"negative", g, []store.Override{{UserID: u2, RPMOverride: testutil.Ptr(int64(4))}, {UserID: u1, RPMOverride: testutil.Ptr(int64(-1))}}, store.ErrInvalid},
		{"duplicate user", g, []store.Override{{UserID: u1, RPMOverride: testutil.Ptr(int64(4))}, {UserID: u1, RPMOverride: testutil.Ptr(int64(4))}}, store.ErrInvalid},
		{"unknown user", g, []store.Override{{UserID: u2, RPMOverride: testutil.Ptr(int64(4))}, {UserID: 999999, RPMOverride: testutil.Ptr(int64(4))}}, store.ErrNotFound},
		{"unknown user with nil", g, []store.Override{{UserID: 999999}}, store.ErrNotFound},
		{"unknown group", 999999, []store.Override{{UserID: u2, RPMOverride: testutil.Ptr(int64(4))}}, store.ErrNotFound},
	} {
		if err := st.ReplaceGroupOverrides(ctx, tc.gid, tc.entries); !errors.Is(err, tc.want) {
			t.Errorf("%s: ReplaceGroupOverrides = %v, want %v", tc.name, err, tc.want)
		}
		expect(g, before) // nothing changed
	}
	if err := st.ReplaceGroupOverrides(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	expect(g, []store.Override{})

	// ClearGroupOverrides.
	storetest.SeedOverride(t, pool, u1, g, 1)
	storetest.SeedOverride(t, pool, u2, g, 2)
	storetest.SeedOverride(t, pool, u3, empty, 3)
	n, err := st.ClearGroupOverrides(ctx, g)
	if err != nil || n != 2 {
		t.Fatalf("ClearGroupOverrides = %d, %v; want 2, nil", n, err)
	}
	n, err = st.ClearGroupOverrides(ctx, g)
	if err != nil || n != 0 {
		t.Fatalf("ClearGroupOverrides again = %d, %v; want 0, nil", n, err)
	}
	expect(g, []store.Override{})
	expect(empty, []store.Override{{UserID: u3, RPMOverride: testutil.Ptr(int64(3))}})
	if _, err := st.ClearGroupOverrides(ctx, 999999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ClearGroupOverrides(unknown) = %v", err)
	}
}

func fmtOverrides(os []store.Override) string {
	s := "["
	for _, o := range os {
		v := "nil"
		if o.RPMOverride != nil {
			v = testutil.Itoa(*o.RPMOverride)
		}
		s += " " + testutil.Itoa(o.UserID) + ":" + v
	}
	return s + " ]"
}

func TestUpdates(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()

	u := storetest.SeedUser(t, pool, 10)
	g := storetest.SeedGroup(t, pool, "g", 20)
	k, raw := storetest.SeedKey(t, pool, u, &g)

	snap := func() *snapshot.Snapshot {
		t.Helper()
		s, err := st.LoadSnapshot(ctx, store.HashKey(raw))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	if err := st.UpdateUser(ctx, u, store.Patch{RPMLimit: testutil.Ptr(int64(11))}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateUser(ctx, u, store.Patch{Status: testutil.Ptr("disabled")}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateUser(ctx, u, store.Patch{Concurrency: testutil.Ptr(int64(3))}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateGroup(ctx, g, store.Patch{RPMLimit: testutil.Ptr(int64(0)), Status: testutil.Ptr("disabled")}); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateKey(ctx, k, store.Patch{Status: testutil.Ptr("disabled")}); err != nil {
		t.Fatal(err)
	}
	s := snap()
	if s.User.RPMLimit != 11 || s.User.Status != "disabled" || s.User.Concurrency != 3 || s.Group.RPMLimit != 0 ||
		s.Group.Status != "disabled" || s.Status != "disabled" {
		t.Fatalf("after updates: %+v user %+v group %+v", s, s.User, s.Group)
	}
	if err := st.UpdateUser(ctx, u, store.Patch{}); err != nil { // empty patch of a known user
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"user negative", st.UpdateUser(ctx, u, store.Patch{RPMLimit: testutil.Ptr(int64(-1)), Status: testutil.Ptr("active")}), store.ErrInvalid},
		{"user bad status", st.UpdateUser(ctx, u, store.Patch{RPMLimit: testutil.Ptr(int64(1)), Status: testutil.Ptr("banned")}), store.ErrInvalid},
		{"user unknown", st.UpdateUser(ctx, 999999, store.Patch{RPMLimit: testutil.Ptr(int64(1))}), store.ErrNotFound},
		{"user unknown empty patch", st.UpdateUser(ctx, 999999, store.Patch{}), store.ErrNotFound},
		{"group negative", st.UpdateGroup(ctx, g, store.Patch{RPMLimit: testutil.Ptr(int64(-5))}), store.ErrInvalid},
		{"group too big", st.UpdateGroup(ctx, g, store.Patch{RPMLimit: testutil.Ptr(int64(1) << 33)}), store.ErrInvalid},
		{"group bad status", st.UpdateGroup(ctx, g, store.Patch{Status: testutil.Ptr("")}), store.ErrInvalid},
		{"group unknown", st.UpdateGroup(ctx, 999999, store.Patch{Status: testutil.Ptr("active")}), store.ErrNotFound},
		{"key limit", st.UpdateKey(ctx, k, store.Patch{RPMLimit: testutil.Ptr(int64(1)), Status: testutil.Ptr("active")}), store.ErrInvalid},
		{"key bad status", st.UpdateKey(ctx, k, store.Patch{Status: testutil.Ptr("revoked")}), store.ErrInvalid},
		{"key unknown", st.UpdateKey(ctx, 999999, store.Patch{Status: testutil.Ptr("active")}), store.ErrNotFound},
		{"user negative concurrency", st.UpdateUser(ctx, u, store.Patch{Concurrency: testutil.Ptr(int64(-1))}), store.ErrInvalid},
		{"group concurrency", st.UpdateGroup(ctx, g, store.Patch{Concurrency: testutil.Ptr(int64(2))}), store.ErrInvalid},
		{"key concurrency", st.UpdateKey(ctx, k, store.Patch{Concurrency: testutil.Ptr(int64(2))}), store.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if s2 := snap(); !reflect.DeepEqual(s2, s) {
		t.Fatalf("failed updates changed data: %+v", s2)
	}
}

func TestCreateKey(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()
	u := storetest.SeedUser(t, pool, 0)

	id, k, err := st.CreateKey(ctx, store.NewAPIKey{UserID: u, Name: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	var hash []byte
	var prefix, name string
	if err := pool.QueryRow(ctx, `select key_hash, key_prefix, name from rpm_api_keys where id = $1`, id).Scan(&hash, &prefix, &name); err != nil {
		t.Fatal(err)
	}
	if string(hash) != string(k.Hash[:]) || prefix != k.Prefix || name != "cli" {
		t.Fatalf("stored key: hash %x prefix %q name %q", hash, prefix, name)
	}
	var rawStored bool
	if err := pool.QueryRow(ctx, `select exists (select 1 from rpm_api_keys k where position($1 in k::text) > 0)`, k.Raw).Scan(&rawStored); err != nil {
		t.Fatal(err)
	}
	if rawStored {
		t.Fatal("the raw key is stored")
	}
	if _, _, err := st.CreateKey(ctx, store.NewAPIKey{UserID: 999999}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateKey(unknown user) = %v", err)
	}
	if _, _, err := st.CreateKey(ctx, store.NewAPIKey{UserID: u, GroupID: testutil.Ptr(int64(999999))}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateKey(unknown group) = %v", err)
	}
}

// TestLoadSnapshotInvalidIPListFailsClosed: a row whose IP list has an
// entry that is not an address or range (plain SQL can write one) loads
// without error, logs a warning naming the key, and admits no client.
func TestLoadSnapshotInvalidIPListFailsClosed(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()
	core, logs := observer.New(zap.WarnLevel)
	st.Logger = zap.New(core)
	uid := storetest.SeedUser(t, pool, 0)
	for _, tc := range []struct{ name, set string }{
		{"not an address", `ip_whitelist = '{127.0.0.1,nope}'`},
		{"mapped range under 96 bits", `ip_blacklist = '{::ffff:127.0.0.0/90}'`},
		{"NULL element", `ip_blacklist = '{NULL}'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kid, raw := storetest.SeedKey(t, pool, uid, nil)
			storetest.Exec(t, pool, `update rpm_api_keys set `+tc.set+` where id = $1`, kid)
			before := logs.Len()
			s, err := st.LoadSnapshot(ctx, store.HashKey(raw))
			if err != nil {
				t.Fatalf("LoadSnapshot: %v", err)
			}
			if !s.HasIPRules() {
				t.Error("HasIPRules = false: the IP check would be skipped")
			}
			for _, ip := range []string{"127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3", "2001:db8::1"} {
				if s.IPAllowed(netip.MustParseAddr(ip)) {
					t.Errorf("IPAllowed(%s) = true, want every client refused", ip)
				}
			}
			entries := logs.All()[before:]
			if len(entries) != 1 || entries[0].ContextMap()["api_key_id"] != kid {
				t.Fatalf("warnings %v, want one naming api_key_id %d", entries, kid)
			}
			// The snapshot survives the L2 round trip still failing closed.
			b, err := snapshot.Encode(s)
			if err != nil {
				t.Fatal(err)
			}
			d, err := snapshot.Decode(b)
			if err != nil || !d.HasIPRules() || d.IPAllowed(netip.MustParseAddr("127.0.0.1")) {
				t.Fatalf("decoded snapshot: %v, rules %v", err, d != nil && d.HasIPRules())
			}
		})
	}
}
