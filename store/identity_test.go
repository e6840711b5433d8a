package store_test

import (
	"context"
	"net/url"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

var storeIDForm = regexp.MustCompile(`^[0-9a-f]{16}$`)

func storeID(t *testing.T, s store.Identifier) string {
	t.Helper()
	id, err := s.StoreID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !storeIDForm.MatchString(id) {
		t.Fatalf("store id %q is not 16 hex digits", id)
	}
	return id
}

// poolOn opens a pool on the test server with the DSN changed by edit.
func poolOn(t *testing.T, edit func(u *url.URL, q url.Values)) *pgxpool.Pool {
	t.Helper()
	u, err := url.Parse(storetest.BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	edit(u, q)
	u.RawQuery = q.Encode()
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestPostgresStoreID: instances of one schema agree on the identity;
// another schema or another database of the same cluster differs.
func TestPostgresStoreID(t *testing.T) {
	poolA, dsnA := storetest.NewSchema(t)
	poolB, _ := storetest.NewSchema(t)
	a := storeID(t, store.NewPostgres(poolA))
	if b := storeID(t, store.NewPostgres(poolB)); a == b {
		t.Fatalf("two schemas share the store id %s", a)
	}
	// A second instance of schema A: its own pool on the same DSN.
	again, err := pgxpool.New(context.Background(), dsnA)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if a2 := storeID(t, store.NewPostgres(again)); a2 != a {
		t.Fatalf("same schema, store ids %s and %s", a, a2)
	}

	// Schema public of two databases.
	testDB := storeID(t, store.NewPostgres(poolOn(t, func(*url.URL, url.Values) {})))
	otherDB := storeID(t, store.NewPostgres(poolOn(t, func(u *url.URL, _ url.Values) { u.Path = "/postgres" })))
	if testDB == otherDB {
		t.Fatalf("two databases share the store id %s", testDB)
	}

	// A search_path naming no schema is an error, not an identity.
	none := poolOn(t, func(_ *url.URL, q url.Values) { q.Set("search_path", "rpm_no_such_schema") })
	if id, err := store.NewPostgres(none).StoreID(context.Background()); err == nil {
		t.Fatalf("store id %q for a search_path without a schema", id)
	}
}

// TestFileStoreID: the keys file's identity is its content's.
func TestFileStoreID(t *testing.T) {
	doc := func(status string) []byte {
		return []byte(`{"users":[{"id":1}],"api_keys":[{"id":1,"user_id":1,"key":"sk-a","status":"` + status + `"}]}`)
	}
	parse := func(b []byte) *store.File {
		f, err := store.ParseFile(b)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	a, a2 := storeID(t, parse(doc("active"))), storeID(t, parse(doc("active")))
	if a != a2 {
		t.Fatalf("same content, store ids %s and %s", a, a2)
	}
	if b := storeID(t, parse(doc("disabled"))); a == b {
		t.Fatalf("edited content keeps the store id %s", a)
	}
}

// TestPostgresStoreIDWithoutControlFunctions: for a role that may not call
// pg_control_system() (revoked here inside a transaction that is rolled
// back), the identity query answers and says so, and StoreID then skips
// the control query.
func TestPostgresStoreIDWithoutControlFunctions(t *testing.T) {
	ctx := context.Background()
	pool := poolOn(t, func(*url.URL, url.Values) {})
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var db, schema, system string
	var mayControl bool
	if err := tx.QueryRow(ctx, store.StoreIDSQL).Scan(&db, &schema, &mayControl); err != nil || !mayControl {
		t.Fatalf("as superuser: may call pg_control_system() %v, err %v", mayControl, err)
	}
	if err := tx.QueryRow(ctx, store.ControlSQL).Scan(&system); err != nil || system == "" {
		t.Fatalf("as superuser: system %q, err %v", system, err)
	}
	for _, stmt := range []string{
		"revoke execute on function pg_catalog.pg_control_system() from public",
		"create role rpm_test_no_control nologin",
		"set local role rpm_test_no_control",
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := tx.QueryRow(ctx, store.StoreIDSQL).Scan(&db, &schema, &mayControl); err != nil {
		t.Fatalf("identity query without pg_control_system(): %v", err)
	}
	if mayControl || db == "" || schema == "" {
		t.Fatalf("got database %q schema %q, may call pg_control_system() %v", db, schema, mayControl)
	}
}
