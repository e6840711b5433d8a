package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
	"github.com/dunglas/httpsfv"
)

// sfItem is one member of RateLimit-Policy or RateLimit: a string naming
// the policy, with integer parameters.
type sfItem struct {
	name   string
	params map[string]int64
}

// sfParseList parses a header value as an RFC 9651 structured-field list of
// strings with integer parameters. The value must also be the list's
// canonical serialization, so that what a lenient parser folds away
// (duplicate parameters, stray spaces or commas) still fails the test.
func sfParseList(s string) ([]sfItem, error) {
	list, err := httpsfv.UnmarshalList([]string{s})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, errors.New("empty list")
	}
	if canon, err := httpsfv.Marshal(list); err != nil || canon != s {
		return nil, fmt.Errorf("not in canonical form (%q): %v", canon, err)
	}
	out := make([]sfItem, 0, len(list))
	for i, m := range list {
		item, ok := m.(httpsfv.Item)
		if !ok {
			return nil, fmt.Errorf("member %d is an inner list", i)
		}
		name, ok := item.Value.(string)
		if !ok {
			return nil, fmt.Errorf("member %d is %T, want a string", i, item.Value)
		}
		it := sfItem{name: name, params: map[string]int64{}}
		for _, k := range item.Params.Names() {
			v, _ := item.Params.Get(k)
			n, ok := v.(int64)
			if !ok {
				return nil, fmt.Errorf("%q: parameter %s is %T, want an integer", name, k, v)
			}
			it.params[k] = n
		}
		out = append(out, it)
	}
	return out, nil
}

// hdrCheck validates the rate-limit headers of a response against the
// limits (policy name → limit) and counts (policy name → count) and the
// window reset read from Redis.
type hdrWant struct {
	limits map[string]int64
	counts map[string]int64
	order  []string // policies in header order
	// strictest is the policy the X-RateLimit-* trio describes.
	strictest string
}

func hdrCheck(t testing.TB, r response, w hdrWant, resetLeft time.Duration) {
	t.Helper()
	pol, err := sfParseList(r.Header.Get("RateLimit-Policy"))
	if err != nil {
		t.Fatalf("RateLimit-Policy %q: %v", r.Header.Get("RateLimit-Policy"), err)
	}
	state, err := sfParseList(r.Header.Get("RateLimit"))
	if err != nil {
		t.Fatalf("RateLimit %q: %v", r.Header.Get("RateLimit"), err)
	}
	if len(pol) != len(w.order) || len(state) != len(w.order) {
		t.Fatalf("policies %+v / state %+v, want %v", pol, state, w.order)
	}
	reset := hdrReset(t, r, "X-RateLimit-Reset", resetLeft)
	for i, name := range w.order {
		p, s := pol[i], state[i]
		if p.name != name || s.name != name {
			t.Fatalf("policy %d is %q/%q, want %q", i, p.name, s.name, name)
		}
		if len(p.params) != 2 || p.params["q"] != w.limits[name] || p.params["w"] != 60 {
			t.Errorf("RateLimit-Policy %q: %v, want q=%d;w=60", name, p.params, w.limits[name])
		}
		if len(s.params) != 2 || s.params["r"] != max(0, w.limits[name]-w.counts[name]) || s.params["t"] != reset {
			t.Errorf("RateLimit %q: %v, want r=%d;t=%d", name, s.params, w.limits[name]-w.counts[name], reset)
		}
	}
	lim, _ := strconv.ParseInt(r.Header.Get("X-RateLimit-Limit"), 10, 64)
	rem, err := strconv.ParseInt(r.Header.Get("X-RateLimit-Remaining"), 10, 64)
	if err != nil || lim != w.limits[w.strictest] || rem != max(0, w.limits[w.strictest]-w.counts[w.strictest]) {
		t.Errorf("X-RateLimit-Limit/Remaining %s/%s, want the %s limit %d/%d", r.Header.Get("X-RateLimit-Limit"),
			r.Header.Get("X-RateLimit-Remaining"), w.strictest, w.limits[w.strictest], w.limits[w.strictest]-w.counts[w.strictest])
	}
}

// hdrReset parses a seconds header and checks it against the time left in
// the Redis-clock minute (±1) and the range 1..60.
func hdrReset(t testing.TB, r response, name string, left time.Duration) int64 {
	t.Helper()
	v, err := strconv.ParseInt(r.Header.Get(name), 10, 64)
	if err != nil || v < 1 || v > 60 {
		t.Fatalf("%s = %q, want 1..60", name, r.Header.Get(name))
	}
	if d := math.Abs(float64(v) - left.Seconds()); d > 1.0 {
		t.Fatalf("%s = %d, but %.3fs are left in the Redis minute", name, v, left.Seconds())
	}
	return v
}

// hdrLeft reads the time left in the Redis-clock minute.
func hdrLeft(t testing.TB, e *limEnv) time.Duration {
	t.Helper()
	now, err := e.rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return redistest.UntilWindowEnd(now)
}

// TestHeaders checks Retry-After, RateLimit-Policy, RateLimit and
// X-RateLimit-* on admitted and refused responses, against the counters
// and the Redis clock.
func TestHeaders(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "", "")
	uid, gid, key := e.seedGroupedKey(t, 3, 4, noOverride)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)

	limits := map[string]int64{"user": 3, "group": 4}
	order := []string{"user", "group"}
	for i := int64(1); i <= 3; i++ {
		r := c.get(t, "/v1/x", key)
		left := hdrLeft(t, e)
		if r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
		if r.Header.Get("Retry-After") != "" {
			t.Errorf("admitted response has Retry-After")
		}
		e.wantCount(t, "user", e.keys.User(uid), i)
		e.wantCount(t, "group", e.keys.UserGroup(uid, gid), i)
		hdrCheck(t, r, hdrWant{limits: limits, counts: map[string]int64{"user": i, "group": i}, order: order, strictest: "user"}, left)
	}
	// The first refusal comes from Redis, the next ones from the local
	// deny cache; both must describe the same state.
	for i := range 3 {
		r := c.get(t, "/v1/x", key)
		left := hdrLeft(t, e)
		if r.Status != 429 || r.code() != "USER_RPM_EXCEEDED" {
			t.Fatalf("refusal %d: %d %s", i, r.Status, r.Body)
		}
		ra := hdrReset(t, r, "Retry-After", left)
		hdrCheck(t, r, hdrWant{limits: limits, counts: map[string]int64{"user": 3, "group": 3}, order: order, strictest: "user"}, left)
		if x := r.Header.Get("X-RateLimit-Reset"); x != strconv.FormatInt(ra, 10) {
			t.Errorf("X-RateLimit-Reset %s != Retry-After %d", x, ra)
		}
	}
}

// TestHeadersModes checks ratelimit_headers off, ietf and legacy on
// admitted and refused responses (Retry-After stays on every 429).
func TestHeadersModes(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "", `handle /off/* {
		rpm {
			ratelimit_headers off
		}
		reverse_proxy {{.Upstream}}
	}
	handle /ietf/* {
		rpm {
			ratelimit_headers ietf
		}
		reverse_proxy {{.Upstream}}
	}
	handle /legacy/* {
		rpm {
			ratelimit_headers legacy
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		rpm {
			ratelimit_headers all
		}
		reverse_proxy {{.Upstream}}
	}`)
	ietf := []string{"RateLimit-Policy", "RateLimit"}
	legacy := []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
	for _, tc := range []struct {
		mode      string
		has, hasn []string
	}{
		{"off", nil, append(ietf, legacy...)},
		{"ietf", ietf, legacy},
		{"legacy", legacy, ietf},
		{"all", append(ietf, legacy...), nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			uid := storetest.SeedUser(t, e.pool, 1)
			_, key := e.seedKey(t, uid, nil)
			redistest.WaitForWindow(t, e.rdb, 5*time.Second)
			rs := limExpect(t, c, "/"+tc.mode+"/x", key, []int{200, 429}, "USER_RPM_EXCEEDED")
			for i, r := range rs {
				for _, h := range tc.has {
					if r.Header.Get(h) == "" {
						t.Errorf("response %d (%d) lacks %s", i, r.Status, h)
					}
				}
				for _, h := range tc.hasn {
					if v := r.Header.Get(h); v != "" {
						t.Errorf("response %d (%d) has %s: %s", i, r.Status, h, v)
					}
				}
			}
			if rs[1].Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}

	// No limit applies: no rate-limit headers at all.
	uid := storetest.SeedUser(t, e.pool, 0)
	_, key := e.seedKey(t, uid, nil)
	r := c.get(t, "/v1/x", key)
	for _, h := range append(append(ietf, legacy...), "Retry-After") {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("unlimited request has %s: %s", h, v)
		}
	}
}
