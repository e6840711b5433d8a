package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func TestMigrateIdempotent(t *testing.T) {
	pool, _ := storetest.NewSchema(t) // migrated once already
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- store.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}

	var n, v int
	if err := pool.QueryRow(ctx, `select count(*), max(version) from rpm_schema_migrations`).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != 1 || v != 1 {
		t.Fatalf("rpm_schema_migrations: %d rows, max version %d; want 1, 1", n, v)
	}
}

func TestSchemaDefaultsAndChecks(t *testing.T) {
	pool, _ := storetest.NewSchema(t)
	ctx := context.Background()

	var uid int64
	var status string
	var limit int64
	if err := pool.QueryRow(ctx, `insert into rpm_users default values returning id, status, rpm_limit`).Scan(&uid, &status, &limit); err != nil {
		t.Fatalf("insert user with defaults: %v", err)
	}
	if status != "active" || limit != 0 {
		t.Fatalf("user defaults: status %q, rpm_limit %d", status, limit)
	}
	var gid int64
	var name string
	if err := pool.QueryRow(ctx, `insert into rpm_groups default values returning id, name`).Scan(&gid, &name); err != nil {
		t.Fatalf("insert group with defaults: %v", err)
	}
	if want := "group-" + testutil.Itoa(gid); name != want {
		t.Fatalf("default group name %q, want %q", name, want)
	}
	if _, err := pool.Exec(ctx, `insert into rpm_groups default values`); err != nil {
		t.Fatalf("second unnamed group: %v", err)
	}
	var wl []string
	if err := pool.QueryRow(ctx, `insert into rpm_api_keys (key_hash, user_id) values (sha256('x'), $1) returning ip_whitelist`, uid).Scan(&wl); err != nil {
		t.Fatalf("insert key with defaults: %v", err)
	}
	if len(wl) != 0 {
		t.Fatalf("default ip_whitelist %v", wl)
	}

	for _, sql := range []string{
		`update rpm_users set rpm_limit = -1`,
		`update rpm_users set status = 'banned'`,
		`update rpm_groups set rpm_limit = -1`,
		`update rpm_groups set status = 'gone'`,
		`update rpm_api_keys set status = 'revoked'`,
		`insert into rpm_user_group_overrides (user_id, group_id, rpm_override) select u.id, g.id, -5 from rpm_users u, rpm_groups g`,
	} {
		if _, err := pool.Exec(ctx, sql); err == nil {
			t.Errorf("%s: no error, want a check violation", sql)
		}
	}
}
