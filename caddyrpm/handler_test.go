package caddyrpm

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

func handlerForTest(t testing.TB) *Handler {
	t.Helper()
	h := &Handler{
		KeySources: []KeySource{{Header: "Authorization", Scheme: "Bearer"}, {Header: "X-Api-Key"}},
		app:        &App{metrics: newMetrics()},
		format:     errorFormats["openai"],
	}
	return h
}

// useGateway gives h (and its app) a gateway built from cfg, with an
// in-process limiter unless cfg has one and a small cache unless cfg
// sizes one.
func useGateway(t testing.TB, h *Handler, cfg gateway.Config) {
	t.Helper()
	if cfg.Limiter == nil {
		cfg.Limiter = limiter.NewLocal(time.Now)
	}
	if cfg.Cache.L1Size == 0 {
		cfg.Cache = snapshot.CacheConfig{L1Size: 100, L1TTL: time.Minute, NegativeTTL: time.Minute}
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.app.gateway, h.gateway = g, g
}

// countingSource is a store that knows no key and counts its loads.
type countingSource struct {
	store.Source
	loads atomic.Int64
}

func (s *countingSource) LoadSnapshot(context.Context, string) (*snapshot.Snapshot, error) {
	s.loads.Add(1)
	return nil, store.ErrNotFound
}

// fixedSource is a store that answers every key with one snapshot.
type fixedSource struct {
	store.Source
	snap *snapshot.Snapshot
}

func (s fixedSource) LoadSnapshot(context.Context, string) (*snapshot.Snapshot, error) {
	return s.snap, nil
}

// answering is a limiter that answers every check with res.
type answering struct {
	limiter.Acquirer
	res limiter.Result
}

func (a answering) Check(context.Context, []limiter.Counter) (limiter.Result, error) {
	res := a.res
	res.Counts = append([]int64(nil), a.res.Counts...)
	return res, nil
}

// TestExtractKey covers the key sources and malformed input.
func TestExtractKey(t *testing.T) {
	h := handlerForTest(t)
	h.KeyQuery = "key"
	cases := []struct {
		name    string
		headers [][2]string
		query   string
		key     string
		code    string
	}{
		{"bearer", [][2]string{{"Authorization", "Bearer sk-1"}}, "", "sk-1", ""},
		{"scheme case", [][2]string{{"Authorization", "bEaReR   sk-1  "}}, "", "sk-1", ""},
		{"x-api-key", [][2]string{{"X-Api-Key", "sk-2"}}, "", "sk-2", ""},
		{"basic falls through", [][2]string{{"Authorization", "Basic abc"}, {"X-Api-Key", "sk-2"}}, "", "sk-2", ""},
		{"query", nil, "key=sk-3", "sk-3", ""},
		{"none", nil, "", "", "API_KEY_REQUIRED"},
		{"empty bearer", [][2]string{{"Authorization", "Bearer"}}, "", "", "API_KEY_REQUIRED"},
		{"empty x-api-key", [][2]string{{"X-Api-Key", " "}}, "", "", "API_KEY_REQUIRED"},
		{"two headers", [][2]string{{"Authorization", "Bearer a"}, {"Authorization", "Bearer b"}}, "", "", "MULTIPLE_API_KEYS"},
		{"two query params", nil, "key=a&key=b", "", "MULTIPLE_API_KEYS"},
		{"escaped name twice", nil, "key=a&%6Bey=b", "", "MULTIPLE_API_KEYS"},
		{"empty and full", nil, "key=&key=b", "", "MULTIPLE_API_KEYS"},
		{"escaped query key", nil, "a=1&%6Bey=sk%2D3&b", "sk-3", ""},
		{"semicolon in value", nil, "key=sk-3;x=1", "sk-3;x=1", ""},
		{"semicolon before name", nil, "x=1;key=sk-3", "", "API_KEY_REQUIRED"},
		{"bad escape", nil, "key=sk%zz", "", "INVALID_API_KEY"},
		{"plus is a space", nil, "key=sk+3", "", "INVALID_API_KEY"},
		{"name without value", nil, "key", "", "API_KEY_REQUIRED"},
		{"too long", [][2]string{{"X-Api-Key", strings.Repeat("k", store.MaxKeyLen+1)}}, "", "", "INVALID_API_KEY"},
		{"longest allowed", [][2]string{{"X-Api-Key", strings.Repeat("k", store.MaxKeyLen)}}, "", strings.Repeat("k", store.MaxKeyLen), ""},
		{"non-ASCII", [][2]string{{"X-Api-Key", "sk-é"}}, "", "", "INVALID_API_KEY"},
		{"control byte", [][2]string{{"X-Api-Key", "sk-\x01"}}, "", "", "INVALID_API_KEY"},
		{"inner space", [][2]string{{"Authorization", "Bearer a b"}}, "", "", "INVALID_API_KEY"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/?"+tc.query, nil)
			for _, h := range tc.headers {
				r.Header.Add(h[0], h[1])
			}
			key, problem := h.extractKey(r)
			code := ""
			if problem != nil {
				code = problem.code
			}
			if code != tc.code || (tc.code == "" && key != tc.key) {
				t.Fatalf("got key %q code %q, want key %q code %q", key, code, tc.key, tc.code)
			}
		})
	}
}

// TestKeySourceNamedInLowerCase: a key source configured as "x-team-key"
// finds and removes the header a client sent as "x-team-key", which
// net/http hands on in canonical form; the names are read from the
// request's header map as they are once provisioned.
func TestKeySourceNamedInLowerCase(t *testing.T) {
	h := handlerForTest(t)
	h.KeySources = []KeySource{{Header: "x-team-key"}}
	h.provisionKeySources()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(
		"GET /v1/models HTTP/1.1\r\nHost: a\r\nx-team-key: sk-1\r\nx-other: 1\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if key, problem := h.extractKey(r); problem != nil || key != "sk-1" {
		t.Fatalf("extractKey = %q, %v; want sk-1", key, problem)
	}
	h.stripCredentials(r)
	if got := r.Header.Get("x-team-key"); got != "" || r.Header.Get("x-other") != "1" {
		t.Errorf("after stripCredentials: %v, want only X-Other", r.Header)
	}
}

// TestWithoutQueryParam: removing the key parameter leaves every other
// byte of the raw query as sent, and removes exactly the pairs that
// extractKey counts as the key.
func TestWithoutQueryParam(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"z=%20&a=1&key=K&b=2;c=3&sig=a+b", "z=%20&a=1&b=2;c=3&sig=a+b"},
		{"key=K", ""},
		{"key=K&a=1", "a=1"},
		{"a=1&key=K", "a=1"},
		{"a=1&key=K&key=L&%6Bey=M&b", "a=1&b"},
		{"a=1&&key=K&", "a=1&&"},
		{"keys=1&akey=2&key", "keys=1&akey=2"},
		{"x=1;key=K&key=L;y", "x=1;key=K"},
		{"%zz=1&key=K", "%zz=1"},
		{"a=%41&B=%62", "a=%41&B=%62"},
		{"", ""},
	} {
		if got := withoutQueryParam(tc.in, "key"); got != tc.want {
			t.Errorf("withoutQueryParam(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if _, n := queryParam(withoutQueryParam(tc.in, "key"), "key"); n != 0 {
			t.Errorf("%q: %d key pairs left", tc.in, n)
		}
	}
}

// TestStripCredentialsKeepsOtherSchemes: only the key sources' own
// credentials are removed before the request goes on; a Basic
// Authorization (for a basic_auth later in the route) is left alone.
func TestStripCredentialsKeepsOtherSchemes(t *testing.T) {
	h := handlerForTest(t)
	for _, tc := range []struct {
		name, authorization, apiKey string
		wantAuthorization           string
	}{
		{"bearer removed", "Bearer sk-1", "", ""},
		{"basic kept, x-api-key removed", "Basic dTpw", "sk-2", "Basic dTpw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", tc.authorization)
			if tc.apiKey != "" {
				r.Header.Set("X-Api-Key", tc.apiKey)
			}
			h.stripCredentials(r)
			if got := r.Header.Get("Authorization"); got != tc.wantAuthorization {
				t.Errorf("Authorization = %q, want %q", got, tc.wantAuthorization)
			}
			if got := r.Header.Get("X-Api-Key"); got != "" {
				t.Errorf("X-Api-Key = %q, want it removed", got)
			}
		})
	}
}
