package limiter

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// A set passes recentSets from its second request within rateBucket, and
// distinct sets do not pass for each other.
func TestRecentSetsPassesSecondRequestWithinBucket(t *testing.T) {
	r := newRecentSets()
	key := []byte("set")
	t0 := time.Unix(1700000000, 0)
	if r.again(key, t0) {
		t.Fatal("the first request passed")
	}
	if !r.again(key, t0.Add(rateBucket-time.Millisecond)) {
		t.Fatal("a second request within rateBucket did not pass")
	}
	if r.again(key, t0.Add(3*rateBucket)) {
		t.Fatal("a request 2 buckets after the last passed")
	}
	// 20,000 other sets, each once, all at the same instant: every slot is
	// overwritten about 5 times, and only matching fingerprints (1 in
	// 65,536) could pass.
	passed := 0
	for i := range 20000 {
		if r.again([]byte("other"+strconv.Itoa(i)), t0) {
			passed++
		}
	}
	if passed > 3 {
		t.Fatalf("%d of 20,000 sets seen once passed", passed)
	}
}

// Checks of sets seen once leave no reservation entry behind (nothing to
// allocate, sweep or drop); a set checked again within rateBucket gets one.
func TestReservationsTrackOnlyRepeatedSets(t *testing.T) {
	pair, keys, _ := reservingPair(t, time.Hour)
	r := pair[0]
	ctx := context.Background()
	for u := range int64(500) {
		if res, err := r.Check(ctx, []Counter{userCounter(keys, u+1, 1000)}); err != nil || !res.Allowed {
			t.Fatalf("check of user %d: %+v, %v", u+1, res, err)
		}
	}
	if n := reservationSets(r); n > 1 {
		t.Fatalf("%d reservation entries after 500 users' first checks", n)
	}
	hot := []Counter{userCounter(keys, 1000, 1000)}
	for range 2 {
		if _, err := r.Check(ctx, hot); err != nil {
			t.Fatal(err)
		}
	}
	r.reserve.mu.RLock()
	var buf [128]byte
	_, ok := r.reserve.sets[string(appendSetKey(buf[:0], hot))]
	r.reserve.mu.RUnlock()
	if !ok {
		t.Fatal("a set checked twice in a row has no entry")
	}
}

// reservationSets is the number of counter sets r tracks.
func reservationSets(r *Redis) int {
	r.reserve.mu.RLock()
	defer r.reserve.mu.RUnlock()
	return len(r.reserve.sets)
}
