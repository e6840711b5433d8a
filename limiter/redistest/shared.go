package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/redis/go-redis/v9"
)

// SharedAddr is the Redis server every test process shares. Tests on it
// keep to a key prefix of their own (see Shared).
const SharedAddr = "127.0.0.1:6379"

// Shared connects to the shared Redis and returns the client and a fresh
// key prefix ("rpmtest:<random>:"). When the test ends every key under the
// prefix is deleted and the client closed. The test fails at once when the
// server does not answer.
func Shared(t testing.TB) (*redis.Client, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: SharedAddr, ContextTimeoutEnabled: true})
	if err := c.Ping(context.Background()).Err(); err != nil {
		c.Close()
		t.Fatalf("redistest: shared Redis at %s: %v", SharedAddr, err)
	}
	prefix := Prefix(t)
	t.Cleanup(func() {
		DeletePrefix(t, c, prefix)
		c.Close()
	})
	return c, prefix
}

// Prefix returns a fresh random key prefix, "rpmtest:<random>:".
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "rpmtest:" + hex.EncodeToString(b[:]) + ":"
}

// DeletePrefix deletes every key under prefix on c.
func DeletePrefix(t testing.TB, c redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	keys, err := ScanKeys(ctx, c, prefix+"*")
	if err != nil {
		t.Errorf("redistest: scan %s*: %v", prefix, err)
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("redistest: delete %s*: %v", prefix, err)
		}
	}
}

// ScanKeys lists the keys on c that match the glob pattern, with SCAN.
func ScanKeys(ctx context.Context, c redis.UniversalClient, pattern string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}
