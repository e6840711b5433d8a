package limiter

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/redis/go-redis/v9"
)

func redisBackend(t *testing.T, c redis.UniversalClient, keys Keys) backend {
	r := NewRedis(c)
	return backend{
		lim:  r,
		keys: keys,
		count: func(t *testing.T, key string) int64 {
			t.Helper()
			return rawCount(t, c, key)
		},
		wait: func(t *testing.T) { redistest.WaitForWindow(t, c, minRemaining) },
	}
}

// counterPlace is CounterPlace for the counters of client c.
func counterPlace(c redis.UniversalClient, key string) (hash, field string) {
	_, cluster := c.(*redis.ClusterClient)
	return CounterPlace(key, cluster)
}

// rawCount reads a counter's field of its bucket directly (the layout
// documented in layout.go), independent of the scripts: the field if w is
// the current window of the Redis clock, else 0.
func rawCount(t *testing.T, c redis.UniversalClient, key string) int64 {
	t.Helper()
	ctx := context.Background()
	hash, field := counterPlace(c, key)
	vals, err := c.HMGet(ctx, hash, "w", field).Result()
	if err != nil {
		t.Fatalf("hmget %s: %v", key, err)
	}
	if vals[0] == nil {
		return 0
	}
	w, err := strconv.ParseInt(vals[0].(string), 10, 64)
	if err != nil {
		t.Fatalf("%s: bad window %q", key, vals[0])
	}
	if w != redisNow(t, c).UnixMilli()/Window.Milliseconds() {
		return 0
	}
	if vals[1] == nil {
		return 0 // not written this window
	}
	n, err := strconv.ParseInt(vals[1].(string), 10, 64)
	if err != nil {
		t.Fatalf("%s: bad count %q", key, vals[1])
	}
	return n
}

// setRawCount sets a counter's field of its bucket directly, leaving the
// bucket's window as it is.
func setRawCount(t *testing.T, c redis.UniversalClient, key string, n int64) {
	t.Helper()
	hash, field := counterPlace(c, key)
	if err := c.HSet(context.Background(), hash, field, n).Err(); err != nil {
		t.Fatalf("hset %s: %v", key, err)
	}
}

// rawTTL returns the time to live of a counter's bucket (negative: none,
// or no bucket).
func rawTTL(t *testing.T, c redis.UniversalClient, key string) time.Duration {
	t.Helper()
	hash, _ := counterPlace(c, key)
	ttl, err := c.PTTL(context.Background(), hash).Result()
	if err != nil {
		t.Fatalf("pttl %s: %v", key, err)
	}
	return ttl
}

func TestRedisSpecTable(t *testing.T) {
	c, keys := singleClient(t)
	testSpecTable(t, redisBackend(t, c, keys))
}

func TestRedisCluster(t *testing.T) {
	c, keys := clusterClient(t)
	t.Run("spec table", func(t *testing.T) {
		testSpecTable(t, redisBackend(t, c, keys))
	})
	t.Run("exactness", func(t *testing.T) {
		testExactness(t, c, Keys{Prefix: keys.Prefix + "exact:"})
	})
	t.Run("slots agree with CLUSTER KEYSLOT", func(t *testing.T) {
		for _, key := range []string{keys.User(7), keys.UserGroup(123456, 9), keys.ZoneKey("img", 42, 1), "plain-key", "a{}b", "x{y}z{w}"} {
			want, err := c.Do(context.Background(), "CLUSTER", "KEYSLOT", key).Int64()
			if err != nil {
				t.Fatalf("cluster keyslot %s: %v", key, err)
			}
			if got := clusterSlot(key); int64(got) != want {
				t.Errorf("clusterSlot(%q) = %d, Redis says %d", key, got, want)
			}
		}
	})
	t.Run("users spread over slots", func(t *testing.T) {
		// Users land on different masters; each request stays in one slot.
		cc := c.(*redis.ClusterClient)
		r := NewRedis(c)
		redistest.WaitForWindow(t, c, minRemaining)
		nodes := map[string]bool{}
		for uid := int64(100); uid < 130; uid++ {
			cs := []Counter{groupCounter(keys, uid, 1, 2), userCounter(keys, uid, 2), zoneUserCounter(keys, "z", uid, 2)}
			for range 2 {
				if res, err := r.Check(context.Background(), cs); err != nil || !res.Allowed {
					t.Fatalf("user %d: %+v, %v", uid, res, err)
				}
			}
			if res, err := r.Check(context.Background(), cs); err != nil || res.Allowed {
				t.Fatalf("user %d third request: %+v, %v; want refused", uid, res, err)
			}
			node, err := cc.MasterForKey(context.Background(), cs[0].Key)
			if err != nil {
				t.Fatal(err)
			}
			nodes[node.Options().Addr] = true
		}
		if len(nodes) < 2 {
			t.Fatalf("30 users all on %v; want keys spread over masters", nodes)
		}
	})
	t.Run("peek and resetIn", func(t *testing.T) {
		testPeek(t, c, Keys{Prefix: keys.Prefix + "peek:"})
	})
}

func TestRedisExactness(t *testing.T) {
	c, keys := singleClient(t)
	testExactness(t, c, keys)
}

// testExactness: 50 goroutines × 20 requests against limit 37 admit
// exactly 37.
func testExactness(t *testing.T, c redis.UniversalClient, keys Keys) {
	r := NewRedis(c)
	redistest.WaitForWindow(t, c, minRemaining)
	cs := []Counter{groupCounter(keys, 1, 1, 37), userCounter(keys, 1, 1000)}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				res, err := r.Check(context.Background(), cs)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					admitted.Add(1)
				} else {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 37 || refused.Load() != 1000-37 {
		t.Fatalf("admitted %d, refused %d; want 37, 963", admitted.Load(), refused.Load())
	}
	for i, want := range []int64{37, 37} {
		if got := rawCount(t, c, cs[i].Key); got != want {
			t.Fatalf("%s = %d, want %d", cs[i].Key, got, want)
		}
	}
}

func TestRedisResetInMatchesRedisClock(t *testing.T) {
	c, keys := singleClient(t)
	r := NewRedis(c)
	for range 5 {
		res, err := r.Check(context.Background(), []Counter{userCounter(keys, 1, 1000)})
		if err != nil {
			t.Fatal(err)
		}
		want := redistest.UntilWindowEnd(redisNow(t, c))
		if res.ResetIn < time.Millisecond || res.ResetIn > Window {
			t.Fatalf("ResetIn %v outside 1ms..60s", res.ResetIn)
		}
		if d := windowDiff(res.ResetIn, want); d < -time.Second || d > time.Second {
			t.Fatalf("ResetIn %v, Redis clock says %v", res.ResetIn, want)
		}
	}
}

// windowDiff returns a-b modulo the window, in [-30s, 30s), so that a
// minute boundary between the two readings does not count.
func windowDiff(a, b time.Duration) time.Duration {
	d := (a - b) % Window
	if d >= Window/2 {
		d -= Window
	} else if d < -Window/2 {
		d += Window
	}
	return d
}

func TestRedisPeek(t *testing.T) {
	c, keys := singleClient(t)
	testPeek(t, c, keys)
}

func testPeek(t *testing.T, c redis.UniversalClient, keys Keys) {
	r := NewRedis(c)
	ctx := context.Background()
	redistest.WaitForWindow(t, c, minRemaining)
	cs := []Counter{userCounter(keys, 1, 10), groupCounter(keys, 1, 2, 10)}
	for range 3 {
		if _, err := r.Check(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // Peek does not increment
		counts, reset, err := r.Peek(ctx, []string{cs[0].Key, cs[1].Key, keys.UserGroup(1, 99)})
		if err != nil {
			t.Fatal(err)
		}
		if counts[0] != 3 || counts[1] != 3 || counts[2] != 0 {
			t.Fatalf("peek counts %v, want [3 3 0]", counts)
		}
		checkResetIn(t, reset)
	}
	if n, err := r.Count(ctx, cs[0].Key); err != nil || n != 3 {
		t.Fatalf("Count = %d, %v; want 3", n, err)
	}
	counts, reset, err := r.Peek(ctx, nil)
	if err != nil || len(counts) != 0 {
		t.Fatalf("peek no keys: %v, %v", counts, err)
	}
	want := redistest.UntilWindowEnd(redisNow(t, c))
	if d := reset - want; d < -time.Second || d > time.Second {
		t.Fatalf("peek ResetIn %v, Redis clock says %v", reset, want)
	}
}

func TestRedisRoundTrips(t *testing.T) {
	c, keys, hook := countedClient(t)
	r := NewRedis(c)
	ctx := context.Background()
	redistest.WaitForWindow(t, c, minRemaining)
	cs := []Counter{groupCounter(keys, 1, 1, 3), userCounter(keys, 1, 10), zoneUserCounter(keys, "z", 1, 10)}
	if _, err := r.Check(ctx, cs); err != nil { // loads the script if needed
		t.Fatal(err)
	}
	for range 4 {
		hook.reset()
		if _, err := r.Check(ctx, cs); err != nil {
			t.Fatal(err)
		}
		if hook.evalsha.Load() != 1 || hook.total() != 1 {
			t.Fatalf("commands per Check: evalsha %d, total %d; want exactly 1 EVALSHA", hook.evalsha.Load(), hook.total())
		}
	}
	hook.reset()
	if res, err := r.Check(ctx, nil); err != nil || !res.Allowed {
		t.Fatalf("no counters: %+v, %v", res, err)
	}
	if hook.total() != 0 {
		t.Fatalf("Check without counters sent %d commands, want 0", hook.total())
	}

	// Deny cache: the backend's refusal costs one round trip; later
	// refusals in the window cost none.
	d := NewDenyCache(r, nil)
	hook.reset()
	res, err := d.Check(ctx, cs)
	if err != nil || res.Allowed || res.Local || res.Denied != 0 {
		t.Fatalf("first refusal: %+v, %v", res, err)
	}
	if hook.total() != 1 {
		t.Fatalf("backend refusal sent %d commands, want 1", hook.total())
	}
	hook.reset()
	for range 10 {
		res, err := d.Check(ctx, cs)
		if err != nil || res.Allowed || !res.Local || res.Denied != 0 || res.Counts[0] != 3 || res.Counts[1] != 3 {
			t.Fatalf("local refusal: %+v, %v", res, err)
		}
		checkResetIn(t, res.ResetIn)
	}
	if hook.total() != 0 {
		t.Fatalf("deny-cache refusals sent %d commands, want 0", hook.total())
	}
	// Requests without the full counter still go to Redis.
	hook.reset()
	if res, err := d.Check(ctx, cs[1:]); err != nil || !res.Allowed {
		t.Fatalf("other counters: %+v, %v", res, err)
	}
	if hook.evalsha.Load() != 1 {
		t.Fatalf("evalsha %d, want 1", hook.evalsha.Load())
	}
}

func TestRedisScriptReload(t *testing.T) {
	// After SCRIPT FLUSH on a private server, Check falls back to EVAL.
	c, keys := privateClient(t)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r := NewRedis(c)
	if res, err := r.Check(context.Background(), []Counter{userCounter(keys, 1, 5)}); err != nil || !res.Allowed {
		t.Fatalf("after SCRIPT FLUSH: %+v, %v", res, err)
	}
}

// TestRedisExpiry: a bucket's first write of a window sets its expiry to
// the end of the next window plus the slack; later writes of the window
// leave it as it is.
func TestRedisExpiry(t *testing.T) {
	c, keys := singleClient(t)
	const slack = 3 * time.Second
	r := NewRedis(c, WithExpirySlack(slack))
	ctx := context.Background()
	redistest.WaitForWindow(t, c, minRemaining)
	key := keys.User(1)
	hash, _ := counterPlace(c, key)
	window := redisNow(t, c).UnixMilli() / Window.Milliseconds()
	expiry := func() time.Duration {
		end := time.Duration(window+2) * Window
		return end + slack - time.Duration(redisNow(t, c).UnixMilli())*time.Millisecond
	}
	check := func() {
		t.Helper()
		if res, err := r.Check(ctx, []Counter{userCounter(keys, 1, 5)}); err != nil || !res.Allowed {
			t.Fatalf("check: %+v, %v", res, err)
		}
	}
	wantTTL := func(name string, want time.Duration) {
		t.Helper()
		if d := rawTTL(t, c, key) - want; d < -time.Second || d > time.Second {
			t.Fatalf("%s: PTTL %v, want about %v", name, rawTTL(t, c, key), want)
		}
	}
	check()
	wantTTL("new bucket", expiry())

	// A later write of the same window: the expiry stays.
	if err := c.PExpire(ctx, hash, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	check()
	wantTTL("a later write of the window", time.Hour)

	// A bucket of an earlier window: its first write of this one sets it.
	if err := c.HSet(ctx, hash, "w", window-1).Err(); err != nil {
		t.Fatal(err)
	}
	check()
	wantTTL("a bucket of an earlier window", expiry())
}

func TestRedisStaleWindowReadsZero(t *testing.T) {
	c, keys := singleClient(t)
	r := NewRedis(c)
	ctx := context.Background()
	redistest.WaitForWindow(t, c, minRemaining)
	key, group := keys.User(1), keys.UserGroup(1, 1)
	hash, _ := counterPlace(c, key)
	old := redisNow(t, c).UnixMilli()/Window.Milliseconds() - 1
	if err := c.HSet(ctx, hash, "w", old).Err(); err != nil {
		t.Fatal(err)
	}
	setRawCount(t, c, key, 100)
	setRawCount(t, c, group, 100)
	cs := []Counter{userCounter(keys, 1, 2)}
	if counts, _, err := r.Peek(ctx, []string{key, group}); err != nil || counts[0] != 0 || counts[1] != 0 {
		t.Fatalf("peek of a past window: %v, %v; want 0 0", counts, err)
	}
	for i := int64(1); i <= 2; i++ {
		res, err := r.Check(ctx, cs)
		if err != nil || !res.Allowed || res.Counts[0] != i {
			t.Fatalf("request %d: %+v, %v", i, res, err)
		}
	}
	if res, err := r.Check(ctx, cs); err != nil || res.Allowed {
		t.Fatalf("third: %+v, %v; want refused", res, err)
	}
	// The user's other counter, not written in the new window, must not
	// come back with its old count.
	if n := rawCount(t, c, group); n != 0 {
		t.Fatalf("group counter of the past window reads %d in the new one, want 0", n)
	}
	if ttl := rawTTL(t, c, key); ttl <= 0 {
		t.Fatalf("PTTL %v after the window rolled over, want an expiry", ttl)
	}
}

func BenchmarkRedisCheck(b *testing.B) {
	c, keys := singleClient(b)
	ctx := context.Background()
	r := NewRedis(c)
	if err := r.Load(ctx); err != nil {
		b.Fatal(err)
	}
	cs := []Counter{groupCounter(keys, 1, 1, 1<<40), userCounter(keys, 1, 1<<40)}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Check(ctx, cs); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestRedisOneBucketPerCall: the counters of all users share a bucket, so
// a call reads every counter of its checks with one HMGET and writes them
// with one HSET, however many users, checks and counters it carries, and
// sets the expiry once per window; a bucket of an older window is
// unlinked before its first write of the new one.
func TestRedisOneBucketPerCall(t *testing.T) {
	c, keys := privateClient(t)
	r := NewRedis(c)
	ctx := context.Background()
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	redistest.WaitForWindow(t, c, minRemaining)
	sets := [][]Counter{
		{userCounter(keys, 1, 100), groupCounter(keys, 1, 1, 100)},
		{userCounter(keys, 1, 100), groupCounter(keys, 1, 2, 100)},
		{userCounter(keys, 2, 100), groupCounter(keys, 2, 1, 100)},
		{userCounter(keys, 1, 100)},
	}
	call := func() {
		t.Helper()
		runAdmitted(t, r, sets)
	}
	calls := func() map[string]float64 {
		t.Helper()
		info := redisInfo(t, c, "commandstats")
		out := make(map[string]float64)
		for _, cmd := range []string{"hmget", "hset", "pexpireat", "unlink"} {
			out[cmd] = cmdStat(t, info, cmd, "calls")
		}
		return out
	}
	// age moves the bucket to the window before, as if it had been
	// written then.
	age := func() {
		hash, _ := counterPlace(c, keys.User(1))
		window := redisNow(t, c).UnixMilli() / Window.Milliseconds()
		if err := c.HSet(ctx, hash, "w", window-1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name   string
		before func()
		want   map[string]float64
	}{
		{"first of the window", nil, map[string]float64{"hmget": 1, "hset": 1, "pexpireat": 1, "unlink": 0}},
		{"second", nil, map[string]float64{"hmget": 1, "hset": 1, "pexpireat": 0, "unlink": 0}},
		{"a bucket of an older window", age, map[string]float64{"hmget": 1, "hset": 1, "pexpireat": 1, "unlink": 1}},
	} {
		if step.before != nil {
			step.before()
		}
		before := calls()
		call()
		after := calls()
		for cmd, n := range step.want {
			if got := after[cmd] - before[cmd]; got != n {
				t.Errorf("%s call: %s ran %v times, want %v", step.name, cmd, got, n)
			}
		}
	}
	for key, n := range map[string]int64{keys.User(1): 3, keys.UserGroup(1, 1): 1, keys.UserGroup(1, 2): 1, keys.User(2): 1, keys.UserGroup(2, 1): 1} {
		if got := rawCount(t, c, key); got != n {
			t.Errorf("%s = %d, want %d", key, got, n)
		}
	}
}

// TestRedisBucketIsHashtable: a bucket is a hashtable from its first
// write, by either script, however few counters it holds; as a listpack,
// each field lookup would scan the bucket (layout.go).
func TestRedisBucketIsHashtable(t *testing.T) {
	r, c, keys, _ := scriptedRedis(t)
	ctx := context.Background()
	distinct, general := keys, Keys{Prefix: keys.Prefix + "general:"}
	for _, tc := range []struct {
		name     string
		sets     [][]Counter
		counters int
	}{
		// Checks of different users: distinctScript.
		{"distinct", [][]Counter{{userCounter(distinct, 1, 100), groupCounter(distinct, 1, 1, 100)}, {userCounter(distinct, 2, 100)}}, 3},
		// Two checks of one user share a counter: checkScript.
		{"general", [][]Counter{{userCounter(general, 1, 100)}, {userCounter(general, 1, 100), groupCounter(general, 1, 1, 100)}}, 2},
	} {
		runAdmitted(t, r, tc.sets)
		bucket, _ := counterPlace(c, tc.sets[0][0].Key)
		if enc := c.ObjectEncoding(ctx, bucket).Val(); enc != "hashtable" {
			t.Errorf("%s: bucket %s is a %q, want a hashtable", tc.name, bucket, enc)
		}
		fields := c.HKeys(ctx, bucket).Val()
		var counters int
		for _, f := range fields {
			if IsCounterField(f) {
				counters++
			}
		}
		if counters != tc.counters || len(fields) != tc.counters+2 {
			t.Errorf("%s: bucket fields %v, want w, %s and %d counters", tc.name, fields, bucketEncodingField, tc.counters)
		}
	}
	if n := rawCount(t, c, general.User(1)); n != 2 {
		t.Errorf("general: user count %d, want 2", n)
	}
}

// runAdmitted runs sets as the checks of one script call and fails the
// test unless each is admitted.
func runAdmitted(t *testing.T, r *Redis, sets [][]Counter) {
	t.Helper()
	ctx := context.Background()
	checks := make([]*pendingCheck, len(sets))
	for i, cs := range sets {
		checks[i] = &pendingCheck{ctx: ctx, counters: cs, done: make(chan struct{})}
	}
	r.run(ctx, checks)
	for i, p := range checks {
		if p.err != nil || !p.res.Allowed {
			t.Fatalf("check %d: %+v, %v", i, p.res, p.err)
		}
	}
}
