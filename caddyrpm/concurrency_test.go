package caddyrpm

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// capHandler is a handler over the in-process limiter whose every key is
// a key of user 7, limited to 100 per minute and 1 request in flight;
// route is the handler's route.
func capHandler(t *testing.T, format string, route []gateway.RouteLimit) (*Handler, *limiter.Local) {
	t.Helper()
	s := &snapshot.Snapshot{APIKeyID: 3, UserID: 7, Status: "active",
		User: &snapshot.User{ID: 7, Status: "active", RPMLimit: 100, Concurrency: 1}}
	h := handlerForTest(t)
	h.format, h.RateLimitHeaders, h.route = errorFormats[format], "all", route
	lim := limiter.NewLocal(time.Now)
	useGateway(t, h, gateway.Config{Source: fixedSource{snap: s}, Limiter: lim})
	return h, lim
}

// serveCap serves one request of user 7 through next.
func serveCap(t *testing.T, h *Handler, next caddyhttp.Handler) (*httptest.ResponseRecorder, error) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/chat", nil)
	r.Header.Set("Authorization", "Bearer sk-any")
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, r, next)
	return w, err
}

// TestConcurrencyRefusal: a request past a full cap is answered 429
// CONCURRENCY_EXCEEDED with Retry-After 1 and a message naming the cap,
// in each error format, counted as refused by that reason.
func TestConcurrencyRefusal(t *testing.T) {
	for format, code := range map[string]func(body map[string]any) (code, msg any){
		"openai": func(b map[string]any) (any, any) {
			e, _ := b["error"].(map[string]any)
			return e["code"], e["message"]
		},
		"anthropic": func(b map[string]any) (any, any) {
			e, _ := b["error"].(map[string]any)
			return e["code"], e["message"]
		},
		"problem": func(b map[string]any) (any, any) { return b["code"], b["detail"] },
	} {
		t.Run(format, func(t *testing.T) {
			h, _ := capHandler(t, format, nil)
			hold, release := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				_, err := serveCap(t, h, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
					close(hold)
					<-release
					return nil
				}))
				done <- err
			}()
			<-hold
			refused := h.app.metrics.decisions.WithLabelValues("refused", "CONCURRENCY_EXCEEDED")
			before := counterValue(t, refused)
			w, err := serveCap(t, h, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				t.Error("a request past the cap was handed on")
				return nil
			}))
			close(release)
			if err != nil || w.Code != http.StatusTooManyRequests {
				t.Fatalf("second request: %d, %v; want 429", w.Code, err)
			}
			if got := w.Header().Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After %q, want 1", got)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			c, msg := code(body)
			if c != "CONCURRENCY_EXCEEDED" || !strings.Contains(msg.(string), "the user's limit of 1 concurrent requests") ||
				!strings.Contains(msg.(string), "not the upstream provider") {
				t.Errorf("code %v message %q", c, msg)
			}
			if got := counterValue(t, refused) - before; got != 1 {
				t.Errorf("decisions{refused,CONCURRENCY_EXCEEDED} rose by %v, want 1", got)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConcurrencyRouteMessage: a route cap's refusal names the zone and
// its unit.
func TestConcurrencyRouteMessage(t *testing.T) {
	for _, tc := range []struct {
		l    gateway.Limit
		want string
	}{
		{gateway.Limit{Scope: gateway.LimitConcurrencyUser, Limit: 2}, "the user's limit of 2 concurrent requests"},
		{gateway.Limit{Scope: gateway.LimitRouteConcurrencyUser, Zone: "chat", Limit: 3}, `the route limit "chat" of 3 concurrent requests per user`},
		{gateway.Limit{Scope: gateway.LimitRouteConcurrencyKey, Zone: "chat", Limit: 1}, `the route limit "chat" of 1 concurrent requests per API key`},
	} {
		if msg := concurrencyMessage(tc.l); !strings.Contains(msg, tc.want) || !strings.Contains(msg, "Retry after 1 second") {
			t.Errorf("message %q lacks %q", msg, tc.want)
		}
		if code := refusalCode(tc.l.Scope); code != "CONCURRENCY_EXCEEDED" {
			t.Errorf("%v: code %s", tc.l.Scope, code)
		}
	}
}

// TestLeaseReleasedWhenNextReturns: the place is given back when the
// handler chain returns, whether it succeeded, failed or panicked, and
// the in-flight gauge follows.
func TestLeaseReleasedWhenNextReturns(t *testing.T) {
	h, lim := capHandler(t, "openai", []gateway.RouteLimit{{Zone: "chat", Scope: gateway.LimitRouteConcurrencyKey, Limit: 1}})
	untrack := trackLimiter(lim, nil)
	defer untrack()
	upstreamDown := errors.New("upstream failed")
	for name, next := range map[string]caddyhttp.HandlerFunc{
		"ok":     func(w http.ResponseWriter, _ *http.Request) error { w.WriteHeader(200); return nil },
		"failed": func(http.ResponseWriter, *http.Request) error { return upstreamDown },
		"panic":  func(http.ResponseWriter, *http.Request) error { panic(http.ErrAbortHandler) },
	} {
		var during int64
		func() {
			defer func() { _ = recover() }()
			_, _ = serveCap(t, h, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				during = lim.InFlight()
				return next(w, r)
			}))
		}()
		if during != 1 {
			t.Errorf("%s: %d leases held while the request was in flight, want 1", name, during)
		}
		if n := lim.InFlight(); n != 0 {
			t.Errorf("%s: %d leases held after the request, want 0", name, n)
		}
		if w, _ := serveCap(t, h, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); w.Code != 200 {
			t.Errorf("%s: the next request got %d, want 200 (its place is free)", name, w.Code)
		}
	}
	if g := inFlight(); g != 0 {
		t.Errorf("in-flight gauge %v after every request, want 0", g)
	}
}
