package caddyrpm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// admitAll is a backend that admits every check, so the benchmark below
// measures the handler's own work on the admitted path without Redis. Its
// admissions are local (as from reserved units) if local is set.
type admitAll struct {
	limiter.Acquirer
	local bool
}

func (a admitAll) Check(_ context.Context, cs []limiter.Counter) (limiter.Result, error) {
	counts := make([]int64, len(cs))
	return limiter.Result{Allowed: true, Denied: -1, Counts: counts, ResetIn: 30 * time.Second, Local: a.local}, nil
}

// BenchmarkServeHTTPAdmitted is the handler's own CPU and allocations per
// admitted request (key, cached snapshot, counters, headers, placeholders),
// with a backend that answers at once. bench/run.sh measures the whole path.
func BenchmarkServeHTTPAdmitted(b *testing.B) {
	h := admittingHandler(b, admitAll{}, "bench:c:")
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	// "request only" is the cost of building the request and recorder, to
	// subtract from "rpm".
	b.Run("request only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w, r := admittedRequest()
			if err := next.ServeHTTP(w, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rpm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w, r := admittedRequest()
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
			if w.Header().Get("RateLimit") == "" {
				b.Fatal("no RateLimit header on an admitted request")
			}
		}
	})
}

// admittingHandler is a handler with every rate-limit header whose store
// answers every key with one active user in one group, both with limits
// far beyond any benchmark, counted by lim under prefix.
func admittingHandler(t testing.TB, lim limiter.Acquirer, prefix string) *Handler {
	gid := int64(2)
	snap := &snapshot.Snapshot{Version: snapshot.Version, APIKeyID: 3, UserID: 7, GroupID: &gid, Status: "active",
		User:  &snapshot.User{ID: 7, Status: "active", RPMLimit: 1_000_000_000},
		Group: &snapshot.Group{ID: 2, Name: "g", Status: "active", RPMLimit: 1_000_000_000}}
	if err := snap.Prepare(); err != nil {
		t.Fatal(err)
	}
	h := handlerForTest(t)
	h.RateLimitHeaders = "all"
	useGateway(t, h, gateway.Config{Source: fixedSource{snap: snap}, Limiter: lim,
		CounterKeys: limiter.Keys{Prefix: prefix},
		Cache:       snapshot.CacheConfig{L1Size: 100, L1TTL: time.Hour, NegativeTTL: time.Minute}})
	return h
}

// admittedRequest is a request with a key, as the server hands it to the
// route, and a recorder for its response.
func admittedRequest() (*httptest.ResponseRecorder, *http.Request) {
	r := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
	// As long as a key `caddy rpm key create` prints (47 bytes).
	r.Header.Set("Authorization", "Bearer sk-rpm-0123456789abcdefghijABCDEFGHIJ0123456789")
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	return httptest.NewRecorder(), r
}

// BenchmarkServeHTTPReserved is the admitted path as a server runs it: 32
// requests at once of one hot user far from its limits, through the
// limiter chain of a Redis configuration (the deny cache, the breaker and
// Redis with reservations), so that nearly every request is admitted from
// a reservation. Contention between the cores counts here, as in Caddy.
func BenchmarkServeHTTPReserved(b *testing.B) {
	rdb, prefix := redistest.Shared(b)
	counting := limiter.NewRedis(rdb, limiter.WithReservations(limiter.DefaultReservationTTL))
	b.Cleanup(func() { _ = counting.Close() })
	guarded := limiter.NewGuarded(counting, 0, nil)
	b.Cleanup(func() { _ = guarded.Close() })
	h := admittingHandler(b, limiter.NewDenyCache(guarded, time.Now), prefix)
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	b.SetParallelism((32 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w, r := admittedRequest()
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Error(err)
				return
			}
			if w.Header().Get("RateLimit") == "" {
				b.Error("no RateLimit header on an admitted request")
				return
			}
		}
	})
	b.StopTimer()
	st := counting.ReservationStats()
	b.ReportMetric(float64(st.Local)/float64(b.N), "local/op")
}
