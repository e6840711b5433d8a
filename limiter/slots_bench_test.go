package limiter

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRedisSlots compares the admitted path without slots (Check)
// with the same counters plus a concurrency cap that is never reached
// (CheckAcquire, then Release), with 1 and 16 requests per CPU at once,
// without reservations and with them ("reserved/": counters from grants,
// places from spare places). Besides time per request it reports the
// script calls and the release pipelines per request.
func BenchmarkRedisSlots(b *testing.B) {
	ctx := context.Background()
	cs := func(k Keys) []Counter { return []Counter{groupCounter(k, 1, 1, 1<<40), userCounter(k, 1, 1<<40)} }
	var par int
	var opts []RedisOption
	run := func(b *testing.B, op func(r *Redis, k Keys) error) {
		c, keys := singleClient(b)
		hook := &pipeCounter{cmds: map[string]int{}}
		c.AddHook(hook)
		r := NewRedis(c, opts...)
		defer r.Close()
		if err := r.Load(ctx); err != nil {
			b.Fatal(err)
		}
		hook.reset()
		b.ReportAllocs()
		b.SetParallelism(par)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(r, keys); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		for deadline := time.Now().Add(5 * time.Second); r.InFlight() > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // the last release pipeline
		pipes, cmds := hook.get()
		b.ReportMetric(float64(cmds["evalsha"])/float64(b.N), "scripts/op")
		b.ReportMetric(float64(pipes)/float64(b.N), "releases/op")
	}
	for _, mode := range []struct {
		name string
		opts []RedisOption
	}{{"", nil}, {"reserved/", []RedisOption{WithReservations(DefaultReservationTTL)}}} {
		opts = mode.opts
		for _, par = range []int{1, 16} {
			b.Run(fmt.Sprintf("%scheck/par=%d", mode.name, par), func(b *testing.B) {
				run(b, func(r *Redis, k Keys) error {
					_, err := r.Check(ctx, cs(k))
					return err
				})
			})
			b.Run(fmt.Sprintf("%sacquire/par=%d", mode.name, par), func(b *testing.B) {
				run(b, func(r *Redis, k Keys) error {
					ss := []Slot{{Key: k.UserSlots(1), Limit: 1 << 40}}
					res, lease, err := r.CheckAcquire(ctx, cs(k), ss)
					if err == nil && !res.Allowed {
						err = fmt.Errorf("refused: %+v", res)
					}
					lease.Release()
					return err
				})
			})
		}
	}
}
