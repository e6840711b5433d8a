package caddyrpm

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// rlSnap is a key of a user limited to 20 per minute in group "pro"
// limited to 10, and rlRoute a zone "img" of 5 per user.
var (
	rlSnap = &snapshot.Snapshot{APIKeyID: 3, UserID: 7,
		User:  &snapshot.User{ID: 7, Status: "active", RPMLimit: 20},
		Group: &snapshot.Group{ID: 2, Name: "pro", Status: "active", RPMLimit: 10}}
	rlRoute = []gateway.RouteLimit{{Zone: "img", Scope: gateway.LimitRouteUser, Limit: 5}}
)

// decide is the gateway's decision on s through route when the limiter
// answers res.
func decide(t testing.TB, s *snapshot.Snapshot, route []gateway.RouteLimit, res limiter.Result) *gateway.Decision {
	t.Helper()
	h := handlerForTest(t)
	useGateway(t, h, gateway.Config{Source: &countingSource{}, Limiter: answering{res: res}})
	d := h.gateway.Check(context.Background(), s, route)
	return &d
}

func TestSetRateLimitHeaders(t *testing.T) {
	d := decide(t, rlSnap, rlRoute,
		limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9, 2}, ResetIn: 36200 * time.Millisecond})
	all := map[string]string{
		"RateLimit-Policy":      `"user";q=20;w=60, "group";q=10;w=60, "img";q=5;w=60`,
		"RateLimit":             `"user";r=17;t=37, "group";r=1;t=37, "img";r=3;t=37`,
		"X-RateLimit-Limit":     "10",
		"X-RateLimit-Remaining": "1",
		"X-RateLimit-Reset":     "37",
	}
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"all", []string{"RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}},
		{"ietf", []string{"RateLimit-Policy", "RateLimit"}},
		{"legacy", []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}},
		{"off", nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			h := &Handler{RateLimitHeaders: tc.mode}
			hdr := http.Header{}
			h.setRateLimitHeaders(hdr, d)
			if len(hdr) != len(tc.want) {
				t.Errorf("headers %v, want only %v", hdr, tc.want)
			}
			for _, name := range tc.want {
				if got := hdr.Get(name); got != all[name] {
					t.Errorf("%s = %q, want %q", name, got, all[name])
				}
			}
		})
	}

	// No limit applies: no headers.
	hdr := http.Header{}
	unlimited := &snapshot.Snapshot{UserID: 7, User: &snapshot.User{ID: 7, Status: "active"}}
	(&Handler{RateLimitHeaders: "all"}).setRateLimitHeaders(hdr, decide(t, unlimited, nil, limiter.Result{}))
	if len(hdr) != 0 {
		t.Errorf("headers without counters: %v", hdr)
	}

	// A refused request's counts are not incremented; remaining never
	// goes below 0.
	hdr = http.Header{}
	(&Handler{RateLimitHeaders: "all"}).setRateLimitHeaders(hdr, decide(t, rlSnap, nil,
		limiter.Result{Denied: 1, Counts: []int64{4, 12}, ResetIn: 500 * time.Millisecond}))
	if got := hdr.Get("RateLimit"); got != `"user";r=16;t=1, "group";r=0;t=1` {
		t.Errorf("RateLimit = %q", got)
	}
}

// TestPolicyNamesNeedNoEscaping holds appendListItem's shortcut to the
// zone rule: every byte gateway.CheckZone allows in a zone stands in the
// quoted name as it is, as strconv.Quote (and an sf-string) has it; a rule
// that let in '"', '\\' or a non-ASCII byte would fail here.
func TestPolicyNamesNeedNoEscaping(t *testing.T) {
	allowed := 0
	for b := range 256 {
		zone := "z" + string([]byte{byte(b)})
		if gateway.CheckZone(zone) != nil {
			continue
		}
		allowed++
		route := []gateway.RouteLimit{{Zone: zone, Scope: gateway.LimitRouteUser, Limit: 5}}
		hdr := http.Header{}
		(&Handler{RateLimitHeaders: "ietf"}).setRateLimitHeaders(hdr, decide(t, rlSnap, route,
			limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9, 2}, ResetIn: time.Second}))
		want := `"user";q=20;w=60, "group";q=10;w=60, ` + strconv.Quote(zone) + ";q=5;w=60"
		if got := hdr.Get("RateLimit-Policy"); got != want {
			t.Errorf("zone %q: RateLimit-Policy = %q, want %q", zone, got, want)
		}
	}
	if allowed != 26+26+10+3 {
		t.Errorf("CheckZone allows %d bytes after a letter, want letters, digits, '.', '_' and '-'", allowed)
	}
}

func TestLimitMessage(t *testing.T) {
	for _, tc := range []struct {
		l    gateway.Limit
		want string
	}{
		{gateway.Limit{Scope: gateway.LimitUser, Limit: 20}, "the user's limit of 20 requests per minute"},
		{gateway.Limit{Scope: gateway.LimitGroup, Limit: 10}, `the group "pro" limit of 10 requests per minute`},
		{gateway.Limit{Scope: gateway.LimitOverride, Limit: 4}, `the group "pro" limit of 4 requests per minute for this user`},
		{gateway.Limit{Scope: gateway.LimitRouteUser, Zone: "img", Limit: 5}, `the route limit "img" of 5 requests per minute per user`},
		{gateway.Limit{Scope: gateway.LimitRouteKey, Zone: "img", Limit: 2}, `the route limit "img" of 2 requests per minute per API key`},
	} {
		msg := limitMessage(rlSnap, tc.l, 37)
		for _, w := range []string{tc.want, "API gateway", "not the upstream", "Retry after 37 seconds"} {
			if !strings.Contains(msg, w) {
				t.Errorf("message %q lacks %q", msg, w)
			}
		}
	}
}
