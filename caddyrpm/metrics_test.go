package caddyrpm

import (
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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

// check_duration_seconds times the checks that asked the limiter's backend,
// not the admissions from reserved units, which ask nothing.
func TestCheckDurationTimesChecksThatWaited(t *testing.T) {
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	for _, local := range []bool{false, true} {
		h := admittingHandler(t, admitAll{local: local}, "test:c:")
		for range 3 {
			w, r := admittedRequest()
			if err := h.ServeHTTP(w, r, next); err != nil || w.Header().Get("RateLimit") == "" {
				t.Fatalf("local %v: not admitted with headers: %v, %v", local, err, w.Header())
			}
		}
		var v dto.Metric
		if err := h.app.metrics.checkDuration.Write(&v); err != nil {
			t.Fatal(err)
		}
		want := uint64(3)
		if local {
			want = 0
		}
		if n := v.GetHistogram().GetSampleCount(); n != want {
			t.Errorf("local admissions %v: %d checks timed, want %d", local, n, want)
		}
	}
}
