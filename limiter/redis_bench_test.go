package limiter

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// BenchmarkDistinctChecks is what Redis spends on checks of many distinct
// users: each iteration is one script call of 8 checks of 8 different
// users (of 10,000, in turn), each with a user and a group counter far
// from their limits. It reports the script's Redis CPU per check
// (INFO commandstats of a private redis-server). With -benchtime=1250x
// every check is its user's first of the window; with more, most are not.
func BenchmarkDistinctChecks(b *testing.B) {
	const users, perCall = 10000, 8
	ctx := context.Background()
	c, keys := privateClient(b)
	r := NewRedis(c)
	defer r.Close()
	if err := r.Load(ctx); err != nil {
		b.Fatal(err)
	}
	sets := make([][]Counter, users)
	for i := range sets {
		u := int64(i + 1)
		sets[i] = []Counter{userCounter(keys, u, 1<<40), groupCounter(keys, u, 1, 1<<40)}
	}
	checks := make([]*pendingCheck, perCall)
	before := evalshaUsec(b, c)
	b.ResetTimer()
	for i := range b.N {
		for j := range checks {
			checks[j] = &pendingCheck{ctx: ctx, counters: sets[(i*perCall+j)%users], done: make(chan struct{})}
		}
		r.run(ctx, checks)
		for _, p := range checks {
			if p.err != nil || !p.res.Allowed {
				b.Fatalf("check: allowed %v, err %v", p.res.Allowed, p.err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(evalshaUsec(b, c)-before)/float64(b.N*perCall), "redis-µs/check")
}

// evalshaUsec returns the microseconds Redis has spent in EVALSHA so far.
func evalshaUsec(b *testing.B, c *redis.Client) int64 {
	b.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(strings.TrimSpace(rest), ",") {
			if v, ok := strings.CutPrefix(field, "usec="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				return n
			}
		}
	}
	return 0
}
