package caddyrpm

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// BenchmarkSetRateLimitHeaders measures the headers of an admitted request
// with a user and a group limit, the common case on the hot path.
func BenchmarkSetRateLimitHeaders(b *testing.B) {
	h := &Handler{RateLimitHeaders: "all"}
	d := decide(b, rlSnap, nil, limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9}, ResetIn: 36200 * time.Millisecond})
	b.ReportAllocs()
	for b.Loop() {
		h.setRateLimitHeaders(make(http.Header, 8), d)
	}
}
