package caddyrpm

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// The counter resolved once for L1 hits is the one labelled l1; other
// layers still count under their own label.
func TestCacheHitCountsByLayer(t *testing.T) {
	m := newMetrics()
	m.cacheHit("l1")
	m.cacheHit("l1")
	m.cacheHit("l2")
	for layer, want := range map[string]float64{"l1": 2, "l2": 1} {
		var v dto.Metric
		if err := m.cacheHits.WithLabelValues(layer).Write(&v); err != nil {
			t.Fatal(err)
		}
		if n := v.GetCounter().GetValue(); n != want {
			t.Errorf(`cache_hits_total{layer=%q} = %v, want %v`, layer, n, want)
		}
	}
}
