package limiter

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// BenchmarkDistinctChecks is what Redis spends on checks of many distinct
// users: each iteration is one script call of 8 checks of 8 different
// users (of 10,000, in turn), each with a user and a group counter far
// from their limits. It reports, per check, the time Redis spent in the
// script and the CPU time of the (private) redis-server. The bucket
// (layout.go) is, before the first call: absent ("new"), or of the
// previous window ("earlier", holding every user's counters of then).
// With -benchtime=1250x every check is its user's first of the window;
// with more, most are not.
func BenchmarkDistinctChecks(b *testing.B) {
	const users, perCall = 10000, 8
	for _, hashes := range []string{"new", "earlier"} {
		b.Run(hashes, func(b *testing.B) {
			r, c, keys := loadedPrivateRedis(b)
			sets := distinctUserSets(keys, users)
			if hashes == "earlier" {
				writeEarlierWindow(b, r, c, sets)
			}
			runCalls(b, r, c, perCall, func(k int) []Counter { return sets[k%users] })
		})
	}
}

// distinctUserSets returns the counter sets of n users, 1 to n: a user and
// a group counter each, far from their limits.
func distinctUserSets(keys Keys, n int) [][]Counter {
	sets := make([][]Counter, n)
	for i := range sets {
		u := int64(i + 1)
		sets[i] = []Counter{userCounter(keys, u, 1<<40), groupCounter(keys, u, 1, 1<<40)}
	}
	return sets
}

// writeEarlierWindow checks each counter set once and then moves their
// buckets to the window before (see layout.go), as if they had been
// written a minute ago.
func writeEarlierWindow(tb testing.TB, r *Redis, c *redis.Client, sets [][]Counter) {
	tb.Helper()
	ctx := context.Background()
	for _, cs := range sets {
		if _, err := r.Check(ctx, cs); err != nil {
			tb.Fatal(err)
		}
	}
	window := redisNow(tb, c).UnixMilli() / Window.Milliseconds()
	buckets := make(map[string]bool)
	for _, cs := range sets {
		hash, _ := CounterPlace(cs[0].Key, false)
		buckets[hash] = true
	}
	for hash := range buckets {
		if err := c.HSet(ctx, hash, "w", window-1).Err(); err != nil {
			tb.Fatal(err)
		}
	}
}

// scriptUsec returns the microseconds Redis has spent in EVALSHA so far
// (INFO commandstats: wall time inside the command) and the CPU time of
// the whole server (INFO cpu: user + system), which other processes on the
// machine disturb less.
func scriptUsec(t testing.TB, c *redis.Client) (evalsha, cpu float64) {
	info := redisInfo(t, c, "commandstats", "cpu")
	return cmdStat(t, info, "evalsha", "usec"), redisCPU(t, info)
}

// redisCPU returns the server's CPU time in µs (user + system) from INFO
// cpu.
func redisCPU(t testing.TB, info map[string]string) float64 {
	return (infoFloat(t, info["used_cpu_user"]) + infoFloat(t, info["used_cpu_sys"])) * 1e6
}

// BenchmarkRandomChecks is BenchmarkDistinctChecks for 50,000 users at
// uniform random, each seen once already in the window: the cold first
// touch of a user's counters that the users scenario of make bench sees.
// Each iteration is one script call of 8 checks.
func BenchmarkRandomChecks(b *testing.B) {
	for _, users := range []int{50, 250, 50000} {
		b.Run(fmt.Sprintf("users=%d", users), func(b *testing.B) { randomChecks(b, users, 8) })
	}
}

// randomChecks runs calls of perCall checks of users drawn at random from
// users through the script.
func randomChecks(b *testing.B, users, perCall int) {
	r, c, sets, order := randomUsers(b, users, perCall)
	runCalls(b, r, c, perCall, func(k int) []Counter { return sets[order[k]] })
}

// randomUsers returns a limiter on a private redis-server whose bucket
// holds the counters of users, each checked once in the window, and the
// order of b.N*perCall checks of users drawn at random.
func randomUsers(b *testing.B, users, perCall int) (*Redis, *redis.Client, [][]Counter, []int) {
	r, c, keys := loadedPrivateRedis(b)
	sets := distinctUserSets(keys, users)
	writeEarlierWindow(b, r, c, sets)
	for _, cs := range sets {
		if _, err := r.Check(context.Background(), cs); err != nil {
			b.Fatal(err)
		}
	}
	order := make([]int, b.N*perCall)
	seed := uint32(7)
	for i := range order {
		seed = seed*1664525 + 1013904223
		order[i] = int(seed>>8) % users
	}
	return r, c, sets, order
}

// BenchmarkPlainCommands: what Redis spends per check of users drawn at
// random from 50,000 when a call is, instead of the script, a pipeline of
// HINCRBYs of the same counters — the least a limiter without a script
// sends: no limit compared, no window read, no atomic refusal (README,
// "Where a users request's Redis CPU goes"). Calls of 7 checks, about
// those of make bench's users scenario, and of 1.
//
//	go test ./limiter -run '^$' -bench PlainCommands -benchtime=20000x
func BenchmarkPlainCommands(b *testing.B) {
	const users = 50000
	for _, perCall := range []int{7, 1} {
		b.Run(fmt.Sprintf("script/checks=%d", perCall), func(b *testing.B) { randomChecks(b, users, perCall) })
		b.Run(fmt.Sprintf("hincrby/checks=%d", perCall), func(b *testing.B) {
			_, c, sets, order := randomUsers(b, users, perCall)
			ctx := context.Background()
			info := redisInfo(b, c, "commandstats", "cpu")
			b.ResetTimer()
			for i := range b.N {
				pipe := c.Pipeline()
				for _, k := range order[i*perCall : (i+1)*perCall] {
					for _, counter := range sets[k] {
						hash, field := CounterPlace(counter.Key, false)
						pipe.HIncrBy(ctx, hash, field, 1)
					}
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after := redisInfo(b, c, "commandstats", "cpu")
			checks := float64(b.N * perCall)
			b.ReportMetric((cmdStat(b, after, "hincrby", "usec")-cmdStat(b, info, "hincrby", "usec"))/checks, "redis-µs/check")
			b.ReportMetric((redisCPU(b, after)-redisCPU(b, info))/checks, "redis-cpu-µs/check")
		})
	}
}

// BenchmarkSharedCalls: how many script calls and round trips concurrent
// checks of many users take, on a single Redis and on a Redis Cluster. 32
// goroutines check users drawn at random from 50,000 (a user and a group
// counter each); calls/check and trips/check are what the README's
// batching section quotes. On a Cluster a script call touches one slot, so
// checks of different users rarely share one, but the calls of one master
// share a round trip (route.go).
//
//	go test ./limiter -run '^$' -bench SharedCalls -benchtime=64000x
func BenchmarkSharedCalls(b *testing.B) {
	for _, mode := range []string{"single", "cluster"} {
		b.Run(mode, func(b *testing.B) {
			trips := &scriptTrips{}
			var c redis.UniversalClient
			var keys Keys
			if mode == "cluster" {
				_, c, keys = privateCluster(b, trips)
			} else {
				var single *redis.Client
				single, keys = singleClient(b)
				single.AddHook(trips)
				c = single
			}
			var calls atomic.Int64
			r := NewRedis(c, WithOnCall(func(int) { calls.Add(1) }))
			b.Cleanup(func() { r.Close() })
			if err := r.Load(context.Background()); err != nil {
				b.Fatal(err)
			}
			sets := distinctUserSets(keys, 50000)
			var seeds atomic.Uint32
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0))) // 32 goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				seed := seeds.Add(7919)
				for pb.Next() {
					seed = seed*1664525 + 1013904223
					if _, err := r.Check(context.Background(), sets[int(seed>>8)%len(sets)]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(calls.Load())/float64(b.N), "calls/check")
			b.ReportMetric(float64(trips.n.Load())/float64(b.N), "trips/check")
		})
	}
}

// loadedPrivateRedis returns a Redis limiter on a private redis-server,
// its scripts loaded, closed when b ends.
func loadedPrivateRedis(b *testing.B) (*Redis, *redis.Client, Keys) {
	c, keys := privateClient(b)
	r := NewRedis(c)
	b.Cleanup(func() { r.Close() })
	if err := r.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	return r, c, keys
}

// runCalls times b.N script calls of perCall checks, the k-th check of the
// run with the counters set(k), each of which must be admitted, and
// reports per check the time Redis spent in the script and its CPU time.
func runCalls(b *testing.B, r *Redis, c *redis.Client, perCall int, set func(k int) []Counter) {
	ctx := context.Background()
	checks := make([]*pendingCheck, perCall)
	evalsha, cpu := scriptUsec(b, c)
	b.ResetTimer()
	for i := range b.N {
		for j := range checks {
			checks[j] = &pendingCheck{ctx: ctx, counters: set(i*perCall + j), done: make(chan struct{})}
		}
		r.run(ctx, checks)
		for _, p := range checks {
			if p.err != nil || !p.res.Allowed {
				b.Fatalf("check: allowed %v, err %v", p.res.Allowed, p.err)
			}
		}
	}
	b.StopTimer()
	evalshaAfter, cpuAfter := scriptUsec(b, c)
	b.ReportMetric((evalshaAfter-evalsha)/float64(b.N*perCall), "redis-µs/check")
	b.ReportMetric((cpuAfter-cpu)/float64(b.N*perCall), "redis-cpu-µs/check")
}
