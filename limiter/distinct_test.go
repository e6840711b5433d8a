package limiter

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// distinctScript answers a call of distinct checks as checkScript does and
// leaves its bucket as checkScript leaves its own: random calls of up to
// 12 checks of distinct users (1 to 3 counters each, limits of 1 to 4, so
// that many are refused), sent to both scripts with counters under two
// prefixes, give the same replies (the clock aside) and the same buckets,
// through window turnovers (the buckets' w moved a window back) and
// fields that are missing.
func TestDistinctScriptMatchesCheckScript(t *testing.T) {
	c, keys := singleClient(t)
	_, other := singleClient(t)
	r := NewRedis(c)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	redistest.WaitForWindow(t, c, 5*time.Second) // both scripts see the same window
	counters := func(k Keys, uid int64, n int, limits []int64) []Counter {
		all := []Counter{userCounter(k, uid, limits[0]), groupCounter(k, uid, 2, limits[1]), zoneUserCounter(k, "z", uid, limits[2])}
		return all[:n]
	}
	for call := range 300 {
		if call%50 == 25 {
			// A window turnover: both buckets are of the window before.
			for _, k := range []Keys{keys, other} {
				bucket, _ := CounterPlace(k.User(1), false)
				if err := c.HIncrBy(ctx, bucket, "w", -1).Err(); err != nil && !strings.Contains(err.Error(), "no such key") {
					t.Fatal(err)
				}
			}
		}
		users := rng.Perm(30)[:1+rng.IntN(12)]
		var viaCheck, viaDistinct []*pendingCheck
		for _, u := range users {
			n := 1 + rng.IntN(3)
			limits := []int64{1 + rng.Int64N(4), 1 + rng.Int64N(4), 1 + rng.Int64N(4)}
			viaCheck = append(viaCheck, &pendingCheck{counters: counters(keys, int64(u), n, limits)})
			viaDistinct = append(viaDistinct, &pendingCheck{counters: counters(other, int64(u), n, limits)})
		}
		checkReply := callScript(t, r, viaCheck, false)
		distinctReply := callScript(t, r, viaDistinct, true)
		if checkReply != distinctReply {
			t.Fatalf("call %d: checkScript answered %q, distinctScript %q", call, checkReply, distinctReply)
		}
		a, b := bucketOf(t, c, keys), bucketOf(t, c, other)
		if a != b {
			t.Fatalf("call %d: checkScript's bucket %s, distinctScript's %s", call, a, b)
		}
	}
}

// callScript sends checks as one call of checkScript, or of distinctScript
// (which must accept them), and returns the reply without the clock.
func callScript(t *testing.T, r *Redis, checks []*pendingCheck, distinct bool) string {
	t.Helper()
	groups := groupChecks(checks)
	layout, places := placeCounters(groups, r.cluster)
	script, keys := distinctScript, layout.hashes
	args, ok := distinctArgs(r.slack, &layout, groups, places)
	if !ok {
		t.Fatal("distinctArgs refused a call of distinct checks")
	}
	if !distinct {
		script = checkScript
		keys, args = r.checkArgs(&layout, groups, places)
	}
	reply, err := script.Run(context.Background(), r.client, keys, args...).Text()
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(reply, " ")
	_, rest, _ = strings.Cut(rest, " ")
	return rest
}

// bucketOf returns the counter bucket of keys' prefix as text, its fields
// without the prefix, and whether it has an expiry, so that buckets of two
// prefixes compare.
func bucketOf(t *testing.T, c *redis.Client, keys Keys) string {
	t.Helper()
	ctx := context.Background()
	bucket, _ := CounterPlace(keys.User(1), false)
	fields, err := c.HGetAll(ctx, bucket).Result()
	if err != nil {
		t.Fatal(err)
	}
	at, err := c.PExpireTime(ctx, bucket).Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range slices.Sorted(maps.Keys(fields)) {
		b.WriteString(f + "=" + fields[f] + " ")
	}
	b.WriteString("expires at " + at.String())
	return b.String()
}
