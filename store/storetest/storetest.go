// Package storetest gives tests an isolated, migrated Postgres schema and
// helpers to seed it. Tests use the shared server named by
// RPM_TEST_DATABASE_URL (default postgres://root@127.0.0.1:5432/test).
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultDSN is the test server used when RPM_TEST_DATABASE_URL is unset.
const DefaultDSN = "postgres://root@127.0.0.1:5432/test?sslmode=disable"

// BaseDSN returns the DSN of the test server.
func BaseDSN() string {
	if dsn := os.Getenv("RPM_TEST_DATABASE_URL"); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// NewSchema creates a schema with a random name, migrates it and returns a
// pool whose search_path is that schema, and a DSN with the same
// search_path (usable by a Caddy subprocess). The schema is dropped and the
// pool closed when the test ends.
func NewSchema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return NewSchemaConfig(t, nil)
}

// NewSchemaConfig is NewSchema with a hook to adjust the pool config (for
// example to install a tracer) before the pool is created.
func NewSchemaConfig(t testing.TB, configure func(*pgxpool.Config)) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "rpm_test_" + hex.EncodeToString(b[:])

	admin, err := pgx.Connect(ctx, BaseDSN())
	if err != nil {
		t.Fatalf("connect to test postgres: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "create schema "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, BaseDSN())
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "drop schema "+schema+" cascade"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})

	u, err := url.Parse(BaseDSN())
	if err != nil {
		t.Fatalf("parse test dsn: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	dsn := u.String()

	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	if configure != nil {
		configure(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("create pool: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the schema drop (cleanups are LIFO)
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool, dsn
}

// SeedUser inserts an active user with the given rpm_limit and returns its id.
func SeedUser(t testing.TB, pool *pgxpool.Pool, rpmLimit int64) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(),
		`insert into rpm_users (username, rpm_limit) values ('user', $1) returning id`, rpmLimit).Scan(&id); err != nil {
		t.Fatalf("seed user: %v", err)
	}
	return id
}

// SeedGroup inserts an active group and returns its id. An empty name
// yields "group-<id>".
func SeedGroup(t testing.TB, pool *pgxpool.Pool, name string, rpmLimit int64) int64 {
	t.Helper()
	var id int64
	if err := pool.QueryRow(context.Background(),
		`insert into rpm_groups (name, rpm_limit) values ($1, $2) returning id`, name, rpmLimit).Scan(&id); err != nil {
		t.Fatalf("seed group: %v", err)
	}
	return id
}

// SeedKey creates an active key for the user, in the group if groupID is
// non-nil, and returns its id and raw key.
func SeedKey(t testing.TB, pool *pgxpool.Pool, userID int64, groupID *int64) (int64, string) {
	t.Helper()
	id, k, err := store.NewPostgres(pool).CreateKey(context.Background(),
		store.NewAPIKey{UserID: userID, GroupID: groupID, Name: "test"})
	if err != nil {
		t.Fatalf("seed key: %v", err)
	}
	return id, k.Raw
}

// SeedOverride sets the user's RPM override in the group.
func SeedOverride(t testing.TB, pool *pgxpool.Pool, userID, groupID, value int64) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `insert into rpm_user_group_overrides (user_id, group_id, rpm_override)
values ($1, $2, $3) on conflict (user_id, group_id) do update set rpm_override = excluded.rpm_override`,
		userID, groupID, value); err != nil {
		t.Fatalf("seed override: %v", err)
	}
}

// Overrides reads the group's RPM overrides, user id to value, straight
// from the database.
func Overrides(t testing.TB, pool *pgxpool.Pool, groupID int64) map[int64]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`select user_id, rpm_override from rpm_user_group_overrides where group_id = $1`, groupID)
	if err != nil {
		t.Fatalf("read overrides: %v", err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var u, v int64
		if err := rows.Scan(&u, &v); err != nil {
			t.Fatalf("read overrides: %v", err)
		}
		out[u] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read overrides: %v", err)
	}
	return out
}

// Exec runs a statement and returns the number of rows it affected; an
// error fails the test.
func Exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	tag, err := pool.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}
