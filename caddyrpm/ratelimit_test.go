package caddyrpm

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

var rlCounters = []limiter.Counter{
	{Key: "u", Limit: 20, Policy: "user", Code: codeUserRPM},
	{Key: "g", Limit: 10, Policy: "group", Code: codeGroupRPM},
	{Key: "z", Limit: 5, Policy: "img", Code: codeRouteRPM},
}

func TestStrictest(t *testing.T) {
	for _, tc := range []struct {
		counts []int64
		want   int
	}{
		{[]int64{0, 0, 0}, 2},   // most room left in none: 20, 10, 5 → img
		{[]int64{19, 0, 0}, 0},  // user has 1 left
		{[]int64{10, 10, 0}, 1}, // group full
		{[]int64{15, 5, 0}, 2},  // all 5 left: the smallest limit wins the tie
		{nil, 2},                // no counts known: limits stand in
	} {
		if got := strictest(rlCounters, tc.counts); got != tc.want {
			t.Errorf("strictest(%v) = %d, want %d", tc.counts, got, tc.want)
		}
	}
}

func TestSetRateLimitHeaders(t *testing.T) {
	res := limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9, 2}, ResetIn: 36200 * time.Millisecond}
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
			h.setRateLimitHeaders(hdr, rlCounters, res)
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

	// No counters (no limit applies): no headers.
	hdr := http.Header{}
	(&Handler{RateLimitHeaders: "all"}).setRateLimitHeaders(hdr, nil, limiter.Result{Allowed: true})
	if len(hdr) != 0 {
		t.Errorf("headers without counters: %v", hdr)
	}

	// A refused request's counts are not incremented; remaining never
	// goes below 0.
	hdr = http.Header{}
	(&Handler{RateLimitHeaders: "all"}).setRateLimitHeaders(hdr, rlCounters[:2],
		limiter.Result{Denied: 1, Counts: []int64{4, 12}, ResetIn: 500 * time.Millisecond})
	if got := hdr.Get("RateLimit"); got != `"user";r=16;t=1, "group";r=0;t=1` {
		t.Errorf("RateLimit = %q", got)
	}
}

func TestLimitMessage(t *testing.T) {
	s := &snapshot.Snapshot{Group: &snapshot.Group{ID: 2, Name: "pro"}}
	for _, tc := range []struct {
		c    limiter.Counter
		want string
	}{
		{rlCounters[0], "the user's limit of 20 requests per minute"},
		{rlCounters[1], `the group "pro" limit of 10 requests per minute`},
		{rlCounters[2], `the route limit "img" of 5 requests per minute`},
	} {
		msg := limitMessage(s, tc.c, "user", 37)
		for _, w := range []string{tc.want, "API gateway", "not the upstream", "Retry after 37 seconds"} {
			if !strings.Contains(msg, w) {
				t.Errorf("message %q lacks %q", msg, w)
			}
		}
	}
}
