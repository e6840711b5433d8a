package caddyrpm

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		{"too long", [][2]string{{"X-Api-Key", strings.Repeat("k", maxKeyLen+1)}}, "", "", "INVALID_API_KEY"},
		{"longest allowed", [][2]string{{"X-Api-Key", strings.Repeat("k", maxKeyLen)}}, "", strings.Repeat("k", maxKeyLen), ""},
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
