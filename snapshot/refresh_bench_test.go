package snapshot

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// BenchmarkReload is the background reload of 256 due keys (one L2 read),
// per key: "changed" decodes every L2 entry (as the first reload after a
// fill does, or one whose snapshot changed), "unchanged" finds the bytes
// its entries were decoded from and renews them.
func BenchmarkReload(b *testing.B) {
	rdb, prefix := redistest.Shared(b)
	ctx := context.Background()
	const keys = refreshBatch
	names := make([]string, keys)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
		enc, err := Encode(userSnapshot(1_000_000 + i))
		if err != nil {
			b.Fatal(err)
		}
		if err := rdb.Set(ctx, prefix+names[i], enc, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name    string
		changed bool
	}{{"changed", true}, {"unchanged", false}} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewCache(testConfig(prefix), rdb, (&countingLoader{}).load, CacheHooks{})
			c.reload(names) // every entry now holds the hash of its bytes
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if bc.changed {
					b.StopTimer()
					for _, k := range names {
						if e, ok := c.l1.GetIfPresent(k); ok {
							e.l2sum++ // no longer the bytes in L2
						}
					}
					b.StartTimer()
				}
				c.reload(names)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
		})
	}
}
