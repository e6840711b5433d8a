package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// invalidation is one invalidation the gateway applied.
type invalidation struct {
	Scope gateway.Scope
	ID    int64
}

// testBackend is what a handler under test runs on: a real store and
// limiter, and the gateway over them (built by handler), which records the
// invalidations it applies.
type testBackend struct {
	st    store.Source
	lim   limiter.Limiter
	keys  limiter.Keys
	token string
	zones []gateway.RouteLimit
	g     *gateway.Gateway

	mu    sync.Mutex
	inval []invalidation
}

// handler builds the gateway over the backend's parts and returns an
// admin handler over it.
func (b *testBackend) handler() *Handler {
	w, _ := b.st.(store.Writable)
	g, err := gateway.New(gateway.Config{
		Source: b.st, Writable: w, Limiter: b.lim, CounterKeys: b.keys,
		Cache: snapshot.CacheConfig{L1Size: 100, L1TTL: time.Minute, NegativeTTL: time.Minute},
		OnInvalidate: func(scope gateway.Scope, id int64, _ string) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.inval = append(b.inval, invalidation{scope, id})
		},
	})
	if err != nil {
		panic(err) // only for a missing source or limiter
	}
	g.DeclareRoute(b.zones)
	b.g = g
	return NewHandler(g, b.token, nil)
}

// takeInvalidations returns and resets the recorded invalidations.
func (b *testBackend) takeInvalidations() []invalidation {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.inval
	b.inval = nil
	return out
}

// fixedClock is a minute + 20 s, so windows reset in 40 s.
var fixedClock = time.Date(2025, 1, 2, 3, 4, 20, 0, time.UTC)

// newPGBackend returns a backend over a fresh Postgres schema and an
// in-process limiter on a fixed clock.
func newPGBackend(t *testing.T) (*testBackend, *pgxpool.Pool) {
	t.Helper()
	pool, _ := storetest.NewSchema(t)
	return &testBackend{
		st:   store.NewPostgres(pool),
		lim:  limiter.NewLocal(func() time.Time { return fixedClock }),
		keys: limiter.Keys{Prefix: "rpmtest:"},
	}, pool
}

// response is a recorded answer with its JSON body decoded.
type response struct {
	Code   int
	Header http.Header
	Raw    string
	JSON   map[string]any
}

// call serves one request; hdr is name, value pairs.
func call(t *testing.T, h http.Handler, method, path, body string, hdr ...string) response {
	t.Helper()
	var req *http.Request
	if body == "" {
		req = httptest.NewRequest(method, path, nil)
	} else {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{Code: rec.Code, Header: rec.Header(), Raw: rec.Body.String()}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.JSON); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, res.Raw, err)
		}
	}
	return res
}

// expect fails the test unless res has the status; error answers must be
// {"error": "..."}.
func expect(t *testing.T, res response, code int, what string) {
	t.Helper()
	if res.Code != code {
		t.Fatalf("%s: status %d, want %d; body %s", what, res.Code, code, res.Raw)
	}
	if code >= 400 {
		msg, ok := res.JSON["error"].(string)
		if !ok || msg == "" || len(res.JSON) != 1 {
			t.Fatalf("%s: error body %s, want {\"error\": \"...\"}", what, res.Raw)
		}
	}
}

// num reads a JSON number field as int64.
func num(t *testing.T, m map[string]any, field string) int64 {
	t.Helper()
	v, ok := m[field].(float64)
	if !ok {
		t.Fatalf("field %q = %#v, want a number (in %v)", field, m[field], m)
	}
	return int64(v)
}
