package limiter

import (
	"context"
	"runtime"
	"testing"
)

// BenchmarkReservations is the admitted path of one hot counter set (a
// user and a group limit far from reached) from 32 goroutines, with and
// without reservations. Besides time per request it reports the script
// calls per admitted request (target with reservations: <= 0.1).
func BenchmarkReservations(b *testing.B) {
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
			counters := []Counter{groupCounter(keys, 1, 1, 1<<40), userCounter(keys, 1, 1<<40)}
			hook.reset()
			b.ReportAllocs()
			b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := r.Check(ctx, counters)
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
