package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// window is the rate-limit window: counters are per minute of the clock
// that decides (the Redis server's, or the process's for the in-process
// limiter).
const window = time.Minute

// UntilWindowEnd returns the time left in the window that holds now.
func UntilWindowEnd(now time.Time) time.Duration {
	return now.Truncate(window).Add(window).Sub(now)
}

// WaitForWindow waits, if needed, until at least need is left in the
// current minute of the Redis server clock, so that a test's requests all
// land in one rate-limit window.
func WaitForWindow(t testing.TB, rdb redis.Cmdable, need time.Duration) {
	t.Helper()
	now, err := rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	waitLeft(t, now, need)
}

// WaitForLocalWindow is WaitForWindow for the in-process limiter, whose
// windows follow this machine's clock.
func WaitForLocalWindow(t testing.TB, need time.Duration) {
	t.Helper()
	waitLeft(t, time.Now(), need)
}

// waitLeft sleeps into the next window when less than need is left in the
// window of now.
func waitLeft(t testing.TB, now time.Time, need time.Duration) {
	t.Helper()
	if left := UntilWindowEnd(now); left < need {
		t.Logf("waiting %v for the next rate-limit window", left)
		// The margin covers the clocks of two processes disagreeing slightly.
		time.Sleep(left + 200*time.Millisecond)
	}
}
