package snapshot

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkL1GarbageCollection is what a full garbage collection costs per
// L1 entry with 200,000 entries (as decoded from L2), over that of an
// empty heap: the L1's share of every GC cycle of a gateway with many
// active keys.
func BenchmarkL1GarbageCollection(b *testing.B) {
	const n = 200_000
	gc := func() time.Duration {
		start := time.Now()
		runtime.GC()
		return time.Since(start)
	}
	var empty time.Duration
	for range 3 {
		empty += gc()
	}
	empty /= 3
	c := NewCache(CacheConfig{L1Size: defaultL1Size, L1TTL: time.Hour, NegativeTTL: time.Minute, StaleIfError: time.Hour},
		nil, nil, CacheHooks{})
	for i := range n {
		enc, err := Encode(userSnapshot(1_000_000 + i))
		if err != nil {
			b.Fatal(err)
		}
		s, err := Decode(enc)
		if err != nil {
			b.Fatal(err)
		}
		c.setL1(userHash(1_000_000+i), s)
	}
	gc()
	b.ResetTimer()
	var full time.Duration
	for range b.N {
		full += gc()
	}
	b.StopTimer()
	b.ReportMetric(float64(full/time.Duration(b.N)-empty)/n, "ns/entry")
	runtime.KeepAlive(c)
}
