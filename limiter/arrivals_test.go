package limiter

import (
	"testing"
	"time"
)

// A grant follows the set's rate in the last rateBucket up to its bound:
// maxGrant units, maxSpares spare places.
func TestArrivalsWantFollowsTheRateUpToItsBound(t *testing.T) {
	now := time.Now()
	slow, hot := seenOnce(now), seenOnce(now)
	for range 29 {
		slow.arrive(now)
	}
	for range 999 {
		hot.arrive(now)
	}
	if got := slow.want(maxGrant); got != 30 {
		t.Fatalf("30 requests in a bucket: want() = %d, want 30", got)
	}
	if got := hot.want(maxGrant); got != maxGrant {
		t.Fatalf("1,000 requests in a bucket: want() = %d units, want %d", got, maxGrant)
	}
	if got := hot.want(maxSpares); got != maxSpares {
		t.Fatalf("1,000 requests in a bucket: want() = %d places, want %d", got, maxSpares)
	}
	// The next bucket starts at 1 but remembers the last full one.
	hot.arrive(now.Add(rateBucket))
	if got := hot.want(maxGrant); got != maxGrant {
		t.Fatalf("after a bucket of 1,000: want() = %d, want %d", got, maxGrant)
	}
}
