package admin

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestModuleOnAdminEndpoint mounts the module on a real Caddy admin
// endpoint with no rpm app configured: the JSON routes answer 503 and the
// page is served.
func TestModuleOnAdminEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	cfg := `{"admin": {"listen": "` + addr + `", "config": {"persist": false}}}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("load caddy: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	get := func(method, path string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, body
	}

	code, _, body := get(http.MethodGet, "/admin/users/1/rpm-status")
	var e map[string]string
	if code != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e["error"] != "rpm app is not configured" {
		t.Errorf("rpm-status without app: %d %s", code, body)
	}
	code, hdr, body := get(http.MethodPost, "/admin/auth-cache")
	if code != http.StatusServiceUnavailable {
		// The app lookup comes first; without an app even a wrong method
		// answers 503.
		t.Errorf("POST auth-cache without app: %d %s %v", code, body, hdr)
	}
	if code, _, _ := get(http.MethodGet, "/admin/ui"); code != http.StatusOK {
		t.Errorf("GET /admin/ui: %d", code)
	}
}
