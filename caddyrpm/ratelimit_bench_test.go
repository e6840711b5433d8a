package caddyrpm

import (
	"fmt"
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

// BenchmarkAdmittedResponseHeaders follows the header map of a response
// through Caddy: the server's Server header, the rate-limit headers,
// reverse_proxy's Via in Server's place and the upstream's headers, and
// net/http's clone at WriteHeader. Go keeps a map of up to eight entries
// in one group; past eight it becomes a table, which costs more to build
// and to clone. The benchmark's upstream sends three headers, so all five
// rate-limit headers take the map to nine; an upstream that sends a dozen
// more, as real APIs do, takes plain's map past eight by itself.
func BenchmarkAdmittedResponseHeaders(b *testing.B) {
	defer func() { responseHeaders = [2]http.Header{} }()
	d := decide(b, rlSnap, nil, limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9}, ResetIn: 36200 * time.Millisecond})
	for _, upstream := range []int{3, 15} {
		names := []string{"Content-Type", "Content-Length", "Date"}
		for i := len(names); i < upstream; i++ {
			names = append(names, fmt.Sprintf("X-Upstream-Header-%d", i))
		}
		for _, which := range []string{"off", "ietf", "all"} {
			h := &Handler{RateLimitHeaders: which}
			b.Run(fmt.Sprintf("upstream headers=%d/%s", upstream, which), func(b *testing.B) {
				value := []string{"v"}
				b.ReportAllocs()
				for b.Loop() {
					hdr := http.Header{"Server": value}
					h.setRateLimitHeaders(hdr, d)
					delete(hdr, "Server")
					hdr["Via"] = value
					for _, name := range names {
						hdr[name] = value
					}
					// Kept, as net/http keeps both maps, so that neither
					// lives on the stack.
					responseHeaders = [2]http.Header{hdr, hdr.Clone()}
				}
			})
		}
	}
}

// responseHeaders holds the last maps of BenchmarkAdmittedResponseHeaders.
var responseHeaders [2]http.Header
