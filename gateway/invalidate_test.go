package gateway

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// TestFlushAfterDatabaseGapFlushesL2 checks that a reconnect of the
// database listener drops the L2 snapshots too: the notifications lost
// during the gap may have been lost on every instance, so nobody else
// deleted the L2 entries they made stale.
func TestFlushAfterDatabaseGapFlushesL2(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := redistest.Shared(t)
	src := &countingSource{}
	g, err := New(Config{
		Source:  src,
		Limiter: limiter.NewDenyCache(limiter.NewLocal(time.Now), time.Now),
		Cache: snapshot.CacheConfig{
			L1Size: 100, L1TTL: time.Minute, L2TTL: time.Minute, NegativeTTL: time.Minute,
			StaleIfError: time.Minute, L2Prefix: prefix + "snap:", L2Timeout: time.Second,
		},
		Redis:   rdb,
		Channel: prefix + "invalidate",
	})
	if err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	sum[0] = 0xab
	hash := hex.EncodeToString(sum[:])
	if _, err := g.Snapshot(ctx, &sum); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, prefix+"snap:"+hash).Result(); n != 1 {
		t.Fatalf("L2 entry missing before the gap")
	}

	g.flushAfterDatabaseGap(ctx)

	if n, _ := rdb.Exists(ctx, prefix+"snap:"+hash).Result(); n != 0 {
		t.Fatalf("L2 entry survived a database listener gap")
	}
	if _, err := g.Snapshot(ctx, &sum); err != nil {
		t.Fatal(err)
	}
	if n := src.loads.Load(); n != 2 {
		t.Fatalf("store loads = %d, want 2 (reloaded after the gap)", n)
	}
}

// TestInvalidatePublishes: an admin invalidation reaches the other
// instances on the channel, in the payload format the listener parses.
func TestInvalidatePublishes(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := redistest.Shared(t)
	sub := rdb.Subscribe(ctx, prefix+"invalidate")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	g, err := New(Config{Source: &countingSource{}, Limiter: limiter.NewLocal(time.Now),
		Cache: snapshot.CacheConfig{L1Size: 10, L1TTL: time.Minute, L2Prefix: prefix + "snap:", L2Timeout: time.Second},
		Redis: rdb, Channel: prefix + "invalidate"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		scope Scope
		id    int64
		want  string
	}{{ScopeAll, 9, "all"}, {ScopeUser, 7, "user:7"}, {ScopeKey, 3, "key:3"}} {
		if err := g.Invalidate(ctx, tc.scope, tc.id); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := sub.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if msg.Payload != tc.want {
			t.Errorf("Invalidate(%s, %d) published %q, want %q", tc.scope, tc.id, msg.Payload, tc.want)
		}
	}
}
