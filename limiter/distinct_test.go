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
// 12 checks of distinct users (1 to 3 counters each), sent to both scripts
// with counters under two prefixes, give the same replies (the clock
// aside) and the same buckets, through window turnovers (the buckets' w
// moved a window back) and fields that are missing. Limits are small (1
// to 4, so that many are refused), near 10 or 100, or far away, and counts
// are set at random now and then, so that counts and limits of one, two
// and three digits meet; half the checks of a call share its limits, so
// that the arguments' runs of equal limits are long and short.
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
		if call%50 == 10 {
			setRandomCounts(t, c, rng, []Keys{keys, other}, 30)
		}
		users := rng.Perm(30)[:1+rng.IntN(12)]
		shared, sharedN := randomLimits(rng), 1+rng.IntN(3)
		var viaCheck, viaDistinct []*pendingCheck
		for _, u := range users {
			n, limits := sharedN, shared
			if rng.IntN(2) == 0 {
				n, limits = 1+rng.IntN(3), randomLimits(rng)
			}
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

// randomLimits returns three limits, each small, near 10 or 100, or far.
func randomLimits(rng *rand.Rand) []int64 {
	limits := make([]int64, 3)
	for i := range limits {
		switch rng.IntN(4) {
		case 0:
			limits[i] = 1 + rng.Int64N(4)
		case 1:
			limits[i] = 8 + rng.Int64N(4)
		case 2:
			limits[i] = 98 + rng.Int64N(4)
		default:
			limits[i] = 1_000_000_000
		}
	}
	return limits
}

// setRandomCounts gives the counters of users 0 to users-1 the same random
// counts (0 to 120) in the buckets of every prefix, in the buckets'
// window; a bucket not yet written is left alone.
func setRandomCounts(t *testing.T, c *redis.Client, rng *rand.Rand, prefixes []Keys, users int) {
	t.Helper()
	ctx := context.Background()
	var fieldValues []any
	for u := range int64(users) {
		for _, key := range []string{prefixes[0].User(u), prefixes[0].UserGroup(u, 2), prefixes[0].ZoneUser("z", u)} {
			_, field := CounterPlace(key, false)
			fieldValues = append(fieldValues, field, rng.IntN(121))
		}
	}
	for _, k := range prefixes {
		bucket, _ := CounterPlace(k.User(1), false)
		if n, err := c.Exists(ctx, bucket).Result(); err != nil || n == 0 {
			continue
		}
		if err := c.HSet(ctx, bucket, fieldValues...).Err(); err != nil {
			t.Fatal(err)
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
