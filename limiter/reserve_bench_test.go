package limiter

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkReservations is the admitted path of one hot counter set (a
// user and a group limit far from reached) from 32 goroutines, with and
// without reservations. Besides time per request it reports the script
// calls per admitted request (target with reservations: <= 0.1).
func BenchmarkReservations(b *testing.B) {
	benchReservations(b, func(keys Keys) func() []Counter {
		counters := []Counter{groupCounter(keys, 1, 1, 1<<40), userCounter(keys, 1, 1<<40)}
		return func() []Counter { return counters }
	})
}

// BenchmarkReservationsManySets is the admitted path of 50,000 users in
// turn, each far from its limits and too slow to reserve, from 32
// goroutines: what tracking the rate of every counter set costs when no
// reservation is ever taken.
func BenchmarkReservationsManySets(b *testing.B) {
	const users = 50000
	benchReservations(b, func(keys Keys) func() []Counter {
		sets := make([][]Counter, users)
		for i := range sets {
			u := int64(i + 1)
			sets[i] = []Counter{groupCounter(keys, u, 1, 1<<40), userCounter(keys, u, 1<<40)}
		}
		var next atomic.Int64
		return func() []Counter { return sets[next.Add(1)%users] }
	})
}

// benchReservations checks, from 32 goroutines, the counter sets that
// next (made by sets under the benchmark's keys) returns, with
// reservations off and on; every check must be admitted.
func benchReservations(b *testing.B, sets func(keys Keys) (next func() []Counter)) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		opts []RedisOption
	}{
		{"off", nil},
		{"on", []RedisOption{WithReservations(DefaultReservationTTL)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, keys, hook := countedClient(b)
			r := NewRedis(c, bc.opts...)
			defer r.Close()
			if err := r.Load(ctx); err != nil {
				b.Fatal(err)
			}
			next := sets(keys)
			hook.reset()
			b.ReportAllocs()
			b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := r.Check(ctx, next())
					if err != nil || !res.Allowed {
						b.Errorf("check: %+v %v", res, err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(hook.evalsha.Load()+hook.eval.Load())/float64(b.N), "calls/admitted")
		})
	}
}
