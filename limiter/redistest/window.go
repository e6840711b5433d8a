package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// WaitForWindow waits, if needed, until at least need is left in the
// current minute of the Redis server clock, so that a test's requests all
// land in one rate-limit window.
func WaitForWindow(t testing.TB, rdb redis.Cmdable, need time.Duration) {
	t.Helper()
	now, err := rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	left := now.Truncate(time.Minute).Add(time.Minute).Sub(now)
	if left < need {
		t.Logf("waiting %v for the next Redis-clock window", left)
		time.Sleep(left + 50*time.Millisecond)
	}
}
