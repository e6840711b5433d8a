package snapshot

import (
	"strconv"
	"testing"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// BenchmarkReload is the background reload of 256 due keys (one L2 read),
// per key: "changed" decodes every L2 entry (as a reload of a snapshot
// that changed does), "unchanged" finds the bytes
// its entries were decoded from and renews them.
func BenchmarkReload(b *testing.B) {
	rdb, prefix := redistest.Shared(b)
	const keys = refreshBatch
	putL2(b, rdb, prefix, keys, func(i int) *Snapshot { return userSnapshot(1_000_000 + i) })
	names := make([]string, keys)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
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
						inL1Slot(b, c, k, func(sl *l1Slot) { sl.l2sum++ }) // no longer the bytes in L2
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
