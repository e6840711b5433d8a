package limiter

import (
	"context"
	"slices"
	"testing"
	"time"
)

// primeRate makes the set of counters look seen n times in the last rate
// bucket, so that r's next check of it asks for a grant of n.
func primeRate(r *Redis, counters []Counter, n int64) {
	e := hotSet(r, counters)
	e.mu.Lock()
	e.bucket, e.prev = time.Now(), n
	e.mu.Unlock()
}

// TestReservedReportsUnusedUnits: Reserved gives, per counter key, the
// units of this instance's grants not used yet, summed over the sets with
// the key, through the wrappers too; 0 once Forget handed them back, and
// always 0 without reservations.
func TestReservedReportsUnusedUnits(t *testing.T) {
	pair, keys, _ := reservingPair(t, time.Hour) // no idle hand-back
	r := pair[0]
	user, g1, g2, other := keys.User(5), keys.UserGroup(5, 1), keys.UserGroup(5, 2), keys.User(6)
	inG1 := []Counter{{Key: user, Limit: 1000, UserID: 5}, {Key: g1, Limit: 1000, UserID: 5, GroupID: 1}}
	inG2 := []Counter{{Key: user, Limit: 1000, UserID: 5}, {Key: g2, Limit: 1000, UserID: 5, GroupID: 2}}
	check := func(counters []Counter, n int) {
		t.Helper()
		for range n {
			if res, err := r.Check(context.Background(), counters); err != nil || !res.Allowed {
				t.Fatalf("check: %+v %v", res, err)
			}
		}
	}
	wrapped := NewDenyCache(NewGuarded(r, time.Second, nil), nil)
	want := func(what string, w []int64) {
		t.Helper()
		all := []string{user, g1, g2, other, user}
		if got := r.Reserved(all); !slices.Equal(got, w) {
			t.Fatalf("%s: Reserved %v, want %v", what, got, w)
		}
		if got := wrapped.Reserved(all); !slices.Equal(got, w) {
			t.Fatalf("%s: Reserved through the deny cache and breaker %v, want %v", what, got, w)
		}
	}

	want("before any grant", []int64{0, 0, 0, 0, 0})
	primeRate(r, inG1, 10)
	check(inG1, 3) // a grant of 10, 3 of it used
	want("a grant of 10 with 3 used", []int64{7, 7, 0, 0, 7})
	primeRate(r, inG2, minGrant)
	check(inG2, 1) // a grant of minGrant, 1 used
	want("two grants sharing the user's counter", []int64{7 + minGrant - 1, 7, minGrant - 1, 0, 7 + minGrant - 1})
	if n, err := r.Count(context.Background(), user); err != nil || n != 10+minGrant {
		t.Fatalf("Redis counts %d, %v for the user: want the %d units granted", n, err, 10+minGrant)
	}

	r.Forget(5, 0)
	want("after Forget", []int64{0, 0, 0, 0, 0})
	waitFor(t, time.Second, func() bool {
		n, err := r.Count(context.Background(), user)
		return err == nil && n == 4
	}, "hand-back of the unused units")
	unused := uint64(7 + minGrant - 1)
	if st := r.ReservationStats(); st.Granted != 2 || st.Local != 2 || st.HandedBack != 2*unused {
		t.Fatalf("stats %+v: want 2 grants, 2 local admissions, %d counter units handed back (%d units of 2 counters each)", st, 2*unused, unused)
	}

	if got := NewRedis(r.client).Reserved([]string{user}); !slices.Equal(got, []int64{0}) {
		t.Fatalf("Reserved without reservations: %v", got)
	}
	if got := NewLocal(nil).Reserved([]string{user, g1}); !slices.Equal(got, []int64{0, 0}) {
		t.Fatalf("Local Reserved: %v", got)
	}
}
