package e2e

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// sfItem is one member of an RFC 8941 structured-field list whose items
// are sf-strings with integer parameters (the shape of RateLimit-Policy and
// RateLimit).
type sfItem struct {
	name   string
	params map[string]int64
	order  []string
}

// sfParseList parses such a list strictly: any deviation from RFC 8941's
// grammar for it (bad quoting, bad keys, non-integer or duplicate
// parameters, stray or trailing commas, other item types) is an error.
func sfParseList(s string) ([]sfItem, error) {
	p := &sfParser{s: s}
	p.skip(' ')
	var out []sfItem
	if p.eof() {
		return nil, fmt.Errorf("empty list")
	}
	for {
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.s[p.i] != ',' {
			return nil, fmt.Errorf("at %d: want ',' between members, got %q", p.i, p.s[p.i])
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, fmt.Errorf("trailing comma")
		}
	}
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }

func (p *sfParser) skip(c byte) {
	for !p.eof() && p.s[p.i] == c {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) item() (sfItem, error) {
	name, err := p.str()
	if err != nil {
		return sfItem{}, err
	}
	it := sfItem{name: name, params: map[string]int64{}}
	for !p.eof() && p.s[p.i] == ';' {
		p.i++
		p.skip(' ')
		key, err := p.key()
		if err != nil {
			return sfItem{}, err
		}
		if p.eof() || p.s[p.i] != '=' {
			return sfItem{}, fmt.Errorf("at %d: parameter %s has no integer value", p.i, key)
		}
		p.i++
		v, err := p.integer()
		if err != nil {
			return sfItem{}, err
		}
		if _, dup := it.params[key]; dup {
			return sfItem{}, fmt.Errorf("duplicate parameter %s", key)
		}
		it.params[key] = v
		it.order = append(it.order, key)
	}
	return it, nil
}

// str parses an sf-string: DQUOTE *(unescaped / "\" (DQUOTE / "\")) DQUOTE
// with unescaped = %x20-21 / %x23-5B / %x5D-7E.
func (p *sfParser) str() (string, error) {
	if p.eof() || p.s[p.i] != '"' {
		return "", fmt.Errorf("at %d: want an sf-string", p.i)
	}
	p.i++
	var b []byte
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.eof() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return "", fmt.Errorf("at %d: bad escape", p.i)
			}
			b = append(b, p.s[p.i])
			p.i++
		case c == '"':
			return string(b), nil
		case c < 0x20 || c > 0x7e:
			return "", fmt.Errorf("at %d: byte %#x not allowed in an sf-string", p.i-1, c)
		default:
			b = append(b, c)
		}
	}
	return "", fmt.Errorf("unterminated sf-string")
}

// key parses a parameter key: (lcalpha / "*") *(lcalpha / DIGIT / "_" /
// "-" / "." / "*").
func (p *sfParser) key() (string, error) {
	start := p.i
	if p.eof() || !(p.s[p.i] >= 'a' && p.s[p.i] <= 'z' || p.s[p.i] == '*') {
		return "", fmt.Errorf("at %d: bad parameter key", p.i)
	}
	p.i++
	for !p.eof() {
		c := p.s[p.i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*' {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i], nil
}

// integer parses an sf-integer: ["-"] 1*15DIGIT.
func (p *sfParser) integer() (int64, error) {
	start := p.i
	if !p.eof() && p.s[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for !p.eof() && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if n := p.i - digits; n < 1 || n > 15 {
		return 0, fmt.Errorf("at %d: want an sf-integer", start)
	}
	if !p.eof() && p.s[p.i] == '.' {
		return 0, fmt.Errorf("at %d: decimal where an integer is expected", p.i)
	}
	return strconv.ParseInt(p.s[start:p.i], 10, 64)
}

// TestSFParser keeps the parser honest: it must refuse bad syntax.
func TestSFParser(t *testing.T) {
	good := map[string]int{
		`"user";q=20;w=60, "group";q=10;w=60`: 2,
		`"group";r=0;t=37`:                    1,
		`"a\"b";q=1,"c";q=-2`:                 2,
		`"x";  q=1`:                           1,
	}
	for s, n := range good {
		items, err := sfParseList(s)
		if err != nil || len(items) != n {
			t.Errorf("%q: %v items, err %v", s, len(items), err)
		}
	}
	for _, s := range []string{
		``, `user;q=1`, `"user";q=1,`, `"user";q=1,,"g";q=1`, `"user";Q=1`, `"user";q=1.5`,
		`"user";q="1"`, `"user";q`, `"user";q=1;q=2`, `"user" ;q=1`, `"us\er";q=1`, `"user`,
		`"user";q=1 "g";q=2`, `"user";q=1234567890123456`, "\"us\ter\";q=1", `"user";q=1 ,`,
	} {
		if items, err := sfParseList(s); err == nil {
			t.Errorf("%q parsed as %+v, want an error", s, items)
		}
	}
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
	return now.Truncate(time.Minute).Add(time.Minute).Sub(now)
}

// TestHeaders checks Retry-After, RateLimit-Policy, RateLimit and
// X-RateLimit-* on admitted and refused responses, against the counters
// and the Redis clock.
func TestHeaders(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "", "")
	uid := storetest.SeedUser(t, e.pool, 3)
	gid := storetest.SeedGroup(t, e.pool, "", 4)
	_, key := e.seedKey(t, uid, &gid)
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
		if r.Status != 429 || limCode(r.Body) != "USER_RPM_EXCEEDED" {
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
