package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestInputsMalformed sends malformed credentials: each gets its documented
// 4xx, none a 5xx, and Caddy logs no panic.
func TestInputsMalformed(t *testing.T) {
	key, c := startWithKey(t, params{Site: `handle /q/* {
		rpm {
			key_query key
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		rpm
		reverse_proxy {{.Upstream}}
	}`})

	long := "sk-" + strings.Repeat("a", 10<<10)
	cases := []struct {
		name    string
		path    string
		headers []string
		status  int
		code    string
	}{
		{"empty bearer", "/v1/x", []string{"Authorization: Bearer"}, 401, "API_KEY_REQUIRED"},
		{"bearer and spaces", "/v1/x", []string{"Authorization: Bearer    "}, 401, "API_KEY_REQUIRED"},
		{"empty x-api-key", "/v1/x", []string{"X-Api-Key:"}, 401, "API_KEY_REQUIRED"},
		{"10 KB key", "/v1/x", []string{"Authorization: Bearer " + long}, 401, "INVALID_API_KEY"},
		{"10 KB x-api-key", "/v1/x", []string{"X-Api-Key: " + long}, 401, "INVALID_API_KEY"},
		{"non-ASCII key", "/v1/x", []string{"Authorization: Bearer sk-clé-ключ-鍵"}, 401, "INVALID_API_KEY"},
		{"non-ASCII byte", "/v1/x", []string{"Authorization: Bearer sk-\xff\xfe"}, 401, "INVALID_API_KEY"},
		{"key with inner space", "/v1/x", []string{"Authorization: Bearer sk-a sk-b"}, 401, "INVALID_API_KEY"},
		{"two Authorization headers", "/v1/x", []string{"Authorization: Bearer " + key, "Authorization: Bearer " + key}, 400, "MULTIPLE_API_KEYS"},
		{"two x-api-key headers", "/v1/x", []string{"X-Api-Key: " + key, "X-Api-Key: other"}, 400, "MULTIPLE_API_KEYS"},
		{"two key query parameters", "/q/x?key=" + key + "&key=" + key, nil, 400, "MULTIPLE_API_KEYS"},
		{"10 KB key query parameter", "/q/x?key=" + long, nil, 401, "INVALID_API_KEY"},
		{"empty key query parameter", "/q/x?key=", nil, 401, "API_KEY_REQUIRED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(t, http.MethodGet, tc.path, tc.headers...)
			authCheckError(t, r, "openai", tc.status, tc.code)
		})
	}
	// Bytes no Go client sends: a NUL and a bare CR in the key. Caddy's
	// HTTP server or the handler refuses them with a 4xx.
	for _, raw := range []string{"sk-\x00abc", "sk-\rabc", "sk-\x01abc"} {
		status := rawRequest(t, c, "Authorization: Bearer "+raw)
		if status < 400 || status >= 500 {
			t.Errorf("key %q: status %d, want 4xx", raw, status)
		}
	}
	if r := c.get(t, "/v1/x", key); r.Status != 200 {
		t.Fatalf("valid key after malformed input: %d %s", r.Status, r.Body)
	}
	time.Sleep(200 * time.Millisecond)
	logs := c.Logs()
	if strings.Contains(strings.ToLower(logs), "panic") {
		t.Fatalf("panic in Caddy's log:\n%s", logs)
	}
	if n := c.metric(t, "caddy_rpm_store_loads_total"); n != 1 {
		t.Fatalf("malformed keys were looked up: store loads = %v, want 1", n)
	}
}

// rawRequest writes a request by hand and returns the response status.
func rawRequest(t testing.TB, c *caddyInstance, header string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.HTTPPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /v1/x HTTP/1.1\r\nHost: localhost\r\n%s\r\nConnection: close\r\n\r\n", header)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestInputsAdaptBadCaddyfile runs `caddy adapt` on Caddyfiles with an
// unknown and a duplicated rpm sub-directive: it fails and names the line.
func TestInputsAdaptBadCaddyfile(t *testing.T) {
	cases := map[string]struct{ src, line, word string }{
		"unknown handler option": {"{\n\trpm {\n\t\tkeys_file k.json\n\t}\n}\n:8080 {\n\trpm {\n\t\terror_fmt openai\n\t}\n\trespond ok\n}\n",
			"Caddyfile:8", "error_fmt"},
		"duplicate cache option": {"{\n\trpm {\n\t\tkeys_file k.json\n\t\tcache {\n\t\t\tl1_ttl 1s\n\t\t\tl1_ttl 2s\n\t\t}\n\t}\n}\n:8080 {\n\trespond ok\n}\n",
			"Caddyfile:6", "l1_ttl"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := dir + "/Caddyfile"
			if err := os.WriteFile(path, []byte(tc.src), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(caddyBin, "adapt", "--config", "Caddyfile")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "HOME="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("caddy adapt accepted it:\n%s", out)
			}
			if !strings.Contains(string(out), tc.line) || !strings.Contains(string(out), tc.word) {
				t.Fatalf("caddy adapt output does not name %s and %q:\n%s", tc.line, tc.word, out)
			}
		})
	}
}
