package caddyrpm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func testContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// TestKeyFilterSharedByConfigs provisions two configurations on one
// Postgres DSN, as a reload does: they share one filter, whose goroutine
// ends when the last of them is cleaned up.
func TestKeyFilterSharedByConfigs(t *testing.T) {
	_, dsn := storetest.NewSchema(t)
	m, err := registerMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	provision := func() *App {
		a := &App{Postgres: dsn, metrics: m}
		if err := a.provisionStore(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if err := a.provisionKeyFilter(testContext(t)); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a1 := provision()
	a2 := provision()
	if a1.keyFilter == nil || a1.keyFilter != a2.keyFilter {
		t.Fatalf("configs on one store have filters %p and %p, want one shared", a1.keyFilter, a2.keyFilter)
	}
	f := a1.keyFilter
	// The shared filter builds on request (the listener asks once it
	// listens); a cleaned-up config does not stop it for the other.
	f.Rebuild()
	deadline := time.Now().Add(5 * time.Second)
	for !f.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the shared filter was not built")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Done():
		t.Fatal("the filter stopped while a config still used it")
	case <-time.After(100 * time.Millisecond):
	}
	if err := a2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the filter's goroutine outlived the last config")
	}
}

// TestHandlerRefusesKeysOutsideTheFilter: with a keys_file store, a key
// outside the file is refused as INVALID_API_KEY without a cache lookup;
// a key of the file takes the usual path.
func TestHandlerRefusesKeysOutsideTheFilter(t *testing.T) {
	f, err := store.ParseFile([]byte(`{"users":[{"id":1}],"api_keys":[{"id":1,"key":"sk-known","user_id":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h := handlerForTest(t)
	h.app.source = f
	if err := h.app.provisionKeyFilter(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if !h.app.keyFilter.Ready() {
		t.Fatal("the keys file's filter is not built at provision")
	}
	// The usual path's answer is not the point here: count the loads.
	src := &countingSource{}
	useGateway(t, h, gateway.Config{Source: src, KeyFilter: h.app.keyFilter})
	loads := &src.loads
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	serve := func(key string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		return w
	}

	rejected := counterValue(t, h.app.metrics.keyFilterRejections)
	for range 100 {
		k, err := store.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if w := serve(k.Raw); w.Code != 401 || !strings.Contains(w.Body.String(), "INVALID_API_KEY") {
			t.Fatalf("unknown key: %d %s", w.Code, w.Body)
		}
	}
	if n := loads.Load(); n > 2 { // a false positive is 1 in 10^4 or less here
		t.Fatalf("%d of 100 unknown keys went to the cache and store", n)
	}
	if d := counterValue(t, h.app.metrics.keyFilterRejections) - rejected; d < 98 {
		t.Fatalf("key_filter_rejections_total rose by %v for 100 unknown keys", d)
	}
	before := loads.Load()
	serve("sk-known")
	if loads.Load() != before+1 {
		t.Fatal("a key of the file did not reach the cache")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %v", err)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
