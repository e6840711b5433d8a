package store_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// watcher collects the payloads of the schema's invalidation channel on its own connection.
type watcher struct {
	conn *pgx.Conn
}

func newWatcher(t *testing.T, pool *pgxpool.Pool) *watcher {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	ch, err := store.ChannelOf(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{ch}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return &watcher{conn: conn}
}

// collect returns the payloads received within d that match keep. The
// channel is database-wide, so other tests' payloads are filtered out.
func (w *watcher) collect(t *testing.T, d time.Duration, keep func(string) bool) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []string
	for {
		n, err := w.conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return out
			}
			t.Fatal(err)
		}
		if keep(n.Payload) {
			out = append(out, n.Payload)
		}
	}
}

func oneOf(payloads ...string) func(string) bool {
	return func(p string) bool { return slices.Contains(payloads, p) }
}

func TestTriggers(t *testing.T) {
	pool, st := newPostgres(t)
	ctx := context.Background()

	u := userWithID(t, pool, randomID(), 10)
	u2 := userWithID(t, pool, randomID(), 10)
	g := groupWithID(t, pool, randomID(), 20)
	k, raw := storetest.SeedKey(t, pool, u, &g)
	keyPayload := "key:" + testutil.Itoa(k) + ":" + store.HashKey(raw)
	userPayload, user2Payload, groupPayload := "user:"+testutil.Itoa(u), "user:"+testutil.Itoa(u2), "group:"+testutil.Itoa(g)
	mine := oneOf(keyPayload, userPayload, user2Payload, groupPayload)
	w := newWatcher(t, pool)

	check := func(name string, want []string, sql string, args ...any) {
		t.Helper()
		storetest.Exec(t, pool, sql, args...)
		got := w.collect(t, 300*time.Millisecond, mine)
		if !slices.Equal(got, want) {
			t.Errorf("%s: payloads %q, want %q", name, got, want)
		}
	}

	check("key status", []string{keyPayload}, `update rpm_api_keys set status = 'disabled' where id = $1`, k)
	check("no-op key update", nil, `update rpm_api_keys set status = 'disabled' where id = $1`, k)
	check("key name only", nil, `update rpm_api_keys set name = 'renamed' where id = $1`, k)
	check("user limit", []string{userPayload}, `update rpm_users set rpm_limit = 11 where id = $1`, u)
	check("user email only", nil, `update rpm_users set email = 'a@b' where id = $1`, u)
	check("group limit", []string{groupPayload}, `update rpm_groups set rpm_limit = 21 where id = $1`, g)
	check("insert override", []string{userPayload}, `insert into rpm_user_group_overrides values ($1, $2, 5)`, u, g)
	check("update override", []string{userPayload}, `update rpm_user_group_overrides set rpm_override = 6 where user_id = $1`, u)
	check("delete override", []string{userPayload}, `delete from rpm_user_group_overrides where user_id = $1 and group_id = $2`, u, g)

	// Store writes notify as well.
	if err := st.SetOverride(ctx, u2, g, testutil.Ptr(int64(3))); err != nil {
		t.Fatal(err)
	}
	if got := w.collect(t, 300*time.Millisecond, mine); !slices.Equal(got, []string{user2Payload}) {
		t.Errorf("SetOverride: payloads %q", got)
	}
	if err := st.UpdateKey(ctx, k, store.Patch{Status: testutil.Ptr("active")}); err != nil {
		t.Fatal(err)
	}
	if got := w.collect(t, 300*time.Millisecond, mine); !slices.Equal(got, []string{keyPayload}) {
		t.Errorf("UpdateKey: payloads %q", got)
	}

	check("delete key", []string{keyPayload}, `delete from rpm_api_keys where id = $1`, k)
	check("delete user", []string{userPayload}, `delete from rpm_users where id = $1`, u)
}

// A bulk delete of a group's overrides sends one group notification, not
// one per row.
func TestTriggerBulkOverrideDelete(t *testing.T) {
	pool, _ := storetest.NewSchema(t)
	g := groupWithID(t, pool, randomID(), 20)
	base := randomID()
	storetest.Exec(t, pool, `insert into rpm_users (id) select $1::bigint + i from generate_series(1, 1000) i`, base)
	w := newWatcher(t, pool)
	storetest.Exec(t, pool, `insert into rpm_user_group_overrides (user_id, group_id, rpm_override)
		select $1::bigint + i, $2, i from generate_series(1, 1000) i`, base, g)
	keep := func(p string) bool {
		if p == "group:"+testutil.Itoa(g) {
			return true
		}
		id, ok := strings.CutPrefix(p, "user:")
		n, err := strconv.ParseInt(id, 10, 64)
		return ok && err == nil && n > base && n <= base+1000
	}
	if got := w.collect(t, 500*time.Millisecond, keep); !slices.Equal(got, []string{"group:" + testutil.Itoa(g)}) {
		t.Fatalf("bulk insert: %d payloads %q, want one group payload", len(got), trim(got))
	}
	if n := storetest.Exec(t, pool, `delete from rpm_user_group_overrides where group_id = $1`, g); n != 1000 {
		t.Fatalf("deleted %d rows", n)
	}
	if got := w.collect(t, 500*time.Millisecond, keep); !slices.Equal(got, []string{"group:" + testutil.Itoa(g)}) {
		t.Fatalf("bulk delete: %d payloads %q, want one group payload", len(got), trim(got))
	}
}

func trim(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}
