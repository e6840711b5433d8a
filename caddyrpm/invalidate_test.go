package caddyrpm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// TestFlushAfterDatabaseGapFlushesL2 checks that a reconnect of the
// database listener drops the L2 snapshots too: the notifications lost
// during the gap may have been lost on every instance, so nobody else
// deleted the L2 entries they made stale.
func TestFlushAfterDatabaseGapFlushesL2(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Skipf("redis: %v", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "rpmtest:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	m, err := registerMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var loads atomic.Int64
	load := func(context.Context, string) (*snapshot.Snapshot, error) {
		loads.Add(1)
		return &snapshot.Snapshot{Version: snapshot.Version, APIKeyID: 1, UserID: 1, Status: "active"}, nil
	}
	a := &App{
		KeyPrefix: prefix,
		logger:    zap.NewNop(),
		metrics:   m,
		limiter:   limiter.NewDenyCache(limiter.NewLocal(time.Now), time.Now),
		cache: snapshot.NewCache(snapshot.CacheConfig{
			L1Size: 100, L1TTL: time.Minute, L2TTL: time.Minute, NegativeTTL: time.Minute,
			StaleIfError: time.Minute, L2Prefix: prefix + "snap:", L2Timeout: time.Second,
		}, rdb, load, snapshot.CacheHooks{}),
	}
	hash := "ab" + hex.EncodeToString(make([]byte, 31))
	if _, err := a.cache.Get(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, prefix+"snap:"+hash).Result(); n != 1 {
		t.Fatalf("L2 entry missing before the gap")
	}

	a.flushAfterDatabaseGap(ctx)

	if n, _ := rdb.Exists(ctx, prefix+"snap:"+hash).Result(); n != 0 {
		t.Fatalf("L2 entry survived a database listener gap")
	}
	if _, err := a.cache.Get(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if n := loads.Load(); n != 2 {
		t.Fatalf("store loads = %d, want 2 (reloaded after the gap)", n)
	}
}
