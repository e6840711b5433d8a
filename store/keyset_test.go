package store_test

import (
	"context"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// scanAll runs ScanKeyHashes and returns the size it announced and the
// hashes as sorted hex.
func scanAll(t *testing.T, ks store.KeySet) (int, []string) {
	t.Helper()
	sized := -1
	var got []string
	err := ks.ScanKeyHashes(context.Background(), func(n int) {
		if sized != -1 || got != nil {
			t.Error("sized called twice or after a key")
		}
		sized = n
	}, func(h *[32]byte) {
		if sized == -1 {
			t.Error("a key before sized")
		}
		got = append(got, hex.EncodeToString(h[:]))
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return sized, got
}

func TestPostgresScanKeyHashes(t *testing.T) {
	for _, mode := range []string{"extended", "simple protocol"} {
		t.Run(mode, func(t *testing.T) {
			pool, _ := storetest.NewSchemaConfig(t, func(c *pgxpool.Config) {
				if mode != "extended" {
					c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
				}
			})
			st := store.NewPostgres(pool)
			if n, got := scanAll(t, st); n != 0 || len(got) != 0 {
				t.Fatalf("empty table: sized %d, %d keys", n, len(got))
			}
			uid := storetest.SeedUser(t, pool, 0)
			var want []string
			for range 50 {
				_, raw := storetest.SeedKey(t, pool, uid, nil)
				want = append(want, store.HashKey(raw))
			}
			// Disabled keys are keys too: they must reach their own refusal.
			storetest.Exec(t, pool, `update rpm_api_keys set status = 'disabled' where id = (select min(id) from rpm_api_keys)`)
			slices.Sort(want)
			n, got := scanAll(t, st)
			if n != len(want) || !slices.Equal(got, want) {
				t.Fatalf("sized %d, got %d hashes; want %d and the seeded ones", n, len(got), len(want))
			}
		})
	}
}

func TestPostgresScanKeyHashesErrors(t *testing.T) {
	_, st := newPostgres(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := st.ScanKeyHashes(ctx, func(int) {}, func(*[32]byte) { t.Error("a key from a cancelled scan") })
	if err == nil || !strings.Contains(err.Error(), "scan key hashes") {
		t.Fatalf("cancelled scan: %v", err)
	}
}

func TestFileScanKeyHashes(t *testing.T) {
	h2 := store.HashKey("sk-demo-2")
	f, err := store.LoadFile(writeFile(t, strings.Replace(keysFile, "HASH", h2, 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{store.HashKey("sk-demo-1"), h2, store.HashKey("sk-demo-3")}
	slices.Sort(want)
	if n, got := scanAll(t, f); n != 3 || !slices.Equal(got, want) {
		t.Fatalf("sized %d, hashes %v; want 3, %v", n, got, want)
	}
}
