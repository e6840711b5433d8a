package caddyrpm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// admitAll is a backend that admits every check, so the benchmark below
// measures the handler's own work on the admitted path without Redis.
type admitAll struct{ limiter.Acquirer }

func (admitAll) Check(_ context.Context, cs []limiter.Counter) (limiter.Result, error) {
	counts := make([]int64, len(cs))
	return limiter.Result{Allowed: true, Denied: -1, Counts: counts, ResetIn: 30 * time.Second}, nil
}

// BenchmarkServeHTTPAdmitted is the handler's own CPU and allocations per
// admitted request (key, cached snapshot, counters, headers, placeholders),
// with a backend that answers at once. bench/run.sh measures the whole path.
func BenchmarkServeHTTPAdmitted(b *testing.B) {
	gid := int64(2)
	snap := &snapshot.Snapshot{Version: snapshot.Version, APIKeyID: 3, UserID: 7, GroupID: &gid, Status: "active",
		User:  &snapshot.User{ID: 7, Status: "active", RPMLimit: 1_000_000_000},
		Group: &snapshot.Group{ID: 2, Name: "g", Status: "active", RPMLimit: 1_000_000_000}}
	if err := snap.Prepare(); err != nil {
		b.Fatal(err)
	}
	h := handlerForTest(b)
	h.RateLimitHeaders = "all"
	useGateway(b, h, gateway.Config{Source: fixedSource{snap: snap}, Limiter: admitAll{},
		CounterKeys: limiter.Keys{Prefix: "bench:c:"},
		Cache:       snapshot.CacheConfig{L1Size: 100, L1TTL: time.Hour, NegativeTTL: time.Minute}})
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

	request := func() (*httptest.ResponseRecorder, *http.Request) {
		r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		// As long as a key `caddy rpm key create` prints (47 bytes).
		r.Header.Set("Authorization", "Bearer sk-rpm-0123456789abcdefghijABCDEFGHIJ0123456789")
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
		return httptest.NewRecorder(), r
	}
	// "request only" is the cost of building the request and recorder, to
	// subtract from "rpm".
	b.Run("request only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w, r := request()
			if err := next.ServeHTTP(w, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rpm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w, r := request()
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
			if w.Header().Get("RateLimit") == "" {
				b.Fatal("no RateLimit header on an admitted request")
			}
		}
	})
}
