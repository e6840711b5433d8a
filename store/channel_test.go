package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestChannelPerSchema checks that a change in one schema notifies only the
// listeners of that schema: instances on other schemas of the same database
// must not drop their caches (and query Postgres) for unrelated ids.
func TestChannelPerSchema(t *testing.T) {
	poolA, _ := storetest.NewSchema(t)
	poolB, _ := storetest.NewSchema(t)
	ctx := context.Background()
	chans := map[string]bool{}
	for _, p := range []*pgxpool.Pool{poolA, poolB} {
		conn, err := p.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := store.ChannelOf(ctx, conn.Conn())
		conn.Release()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ch, store.Channel+"_") || len(ch) > 63 {
			t.Fatalf("channel %q", ch)
		}
		chans[ch] = true
	}
	if len(chans) != 2 {
		t.Fatalf("two schemas share a channel: %v", chans)
	}
	wA, wB := newWatcher(t, poolA), newWatcher(t, poolB)
	uid := storetest.SeedUser(t, poolA, 0)
	storetest.SeedKey(t, poolA, uid, nil)
	if got := wA.collect(t, 500*time.Millisecond, func(p string) bool { return strings.HasPrefix(p, "key:") }); len(got) != 1 {
		t.Fatalf("schema A's listener got %v, want one key notification", got)
	}
	if got := wB.collect(t, 300*time.Millisecond, func(string) bool { return true }); len(got) != 0 {
		t.Fatalf("schema B's listener got schema A's notifications: %v", got)
	}
}
