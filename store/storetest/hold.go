package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
)

// Hold is a test transaction holding a lock (on a table or some rows), to
// keep the writes of the code under test in flight from the database side
// instead of through a delay hook in that code.
type Hold struct {
	t    testing.TB
	pool *pgxpool.Pool
	tx   pgx.Tx
	pid  int32
}

// HoldLock begins a transaction on a connection of its own and runs lock
// in it (for example "lock table ... in share row exclusive mode" or
// "select ... for key share"). The lock lasts until Release or the end of
// the test.
func HoldLock(t testing.TB, pool *pgxpool.Pool, lock string, args ...any) *Hold {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatalf("hold lock: %v", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		t.Fatalf("hold lock: %v", err)
	}
	t.Cleanup(func() {
		_ = tx.Rollback(ctx)
		conn.Release()
	})
	h := &Hold{t: t, pool: pool, tx: tx}
	if err := tx.QueryRow(ctx, `select pg_backend_pid()`).Scan(&h.pid); err != nil {
		t.Fatalf("hold lock: %v", err)
	}
	if _, err := tx.Exec(ctx, lock, args...); err != nil {
		t.Fatalf("hold lock: %s: %v", lock, err)
	}
	return h
}

// Waiting counts the sessions that wait on the hold, directly or queued
// behind another waiter.
func (h *Hold) Waiting() int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), `with recursive w(pid) as (
	select pid from pg_stat_activity where $1 = any(pg_blocking_pids(pid))
	union
	select a.pid from pg_stat_activity a join w on w.pid = any(pg_blocking_pids(a.pid))
) select count(*) from w`, h.pid).Scan(&n); err != nil {
		h.t.Fatalf("sessions waiting on the hold: %v", err)
	}
	return n
}

// WaitFor waits until at least n sessions wait on the hold, and fails the
// test after 10 s.
func (h *Hold) WaitFor(n int) {
	h.t.Helper()
	testutil.WaitFor(h.t, 10*time.Second, func() error {
		if got := h.Waiting(); got < n {
			return fmt.Errorf("%d sessions wait on the lock, want %d", got, n)
		}
		return nil
	})
}

// Release ends the transaction and with it the lock.
func (h *Hold) Release() {
	h.t.Helper()
	if err := h.tx.Rollback(context.Background()); err != nil {
		h.t.Fatalf("release the hold: %v", err)
	}
}

// CountOverrideDeletes installs a statement-level trigger that counts the
// DELETE statements on the overrides table of the pool's schema, and
// returns a function reading the count. A "clear all" runs exactly one
// such statement whatever the number of rows.
func CountOverrideDeletes(t testing.TB, pool *pgxpool.Pool) func() int64 {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`create table rpm_test_delete_statements (at timestamptz not null default clock_timestamp())`,
		`create function rpm_test_count_delete() returns trigger language plpgsql set search_path from current as $$
begin
	insert into rpm_test_delete_statements default values;
	return null;
end $$`,
		`create trigger rpm_test_count_delete after delete on rpm_user_group_overrides
	for each statement execute function rpm_test_count_delete()`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("install the delete counter: %v", err)
		}
	}
	return func() int64 {
		t.Helper()
		var n int64
		if err := pool.QueryRow(ctx, `select count(*) from rpm_test_delete_statements`).Scan(&n); err != nil {
			t.Fatalf("count deletes: %v", err)
		}
		return n
	}
}
