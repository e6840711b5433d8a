package store_test

import (
	"math/rand/v2"
	"testing"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// randomID returns a large random id. NOTIFY channels are database-wide and
// other tests share the database, so tests that watch notifications use ids
// that no other schema is likely to have.
func randomID() int64 { return 1_000_000_000 + rand.Int64N(1_000_000_000_000) }

// newPostgres is a Postgres store on a new, migrated schema, with its pool.
func newPostgres(t *testing.T) (*pgxpool.Pool, *store.Postgres) {
	t.Helper()
	pool, _ := storetest.NewSchema(t)
	return pool, store.NewPostgres(pool)
}

// userWithID inserts a user with an explicit id.
func userWithID(t *testing.T, pool *pgxpool.Pool, id, rpmLimit int64) int64 {
	t.Helper()
	storetest.Exec(t, pool, `insert into rpm_users (id, rpm_limit) values ($1, $2)`, id, rpmLimit)
	return id
}

// groupWithID inserts a group with an explicit id.
func groupWithID(t *testing.T, pool *pgxpool.Pool, id, rpmLimit int64) int64 {
	t.Helper()
	storetest.Exec(t, pool, `insert into rpm_groups (id, rpm_limit) values ($1, $2)`, id, rpmLimit)
	return id
}
