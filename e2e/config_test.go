package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdminTokenUnsetVariableFailsStart: admin_token {env.X} with X unset
// must not start Caddy with an unauthenticated admin API; the error names
// admin_token.
func TestAdminTokenUnsetVariableFailsStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	unset := "RPM_E2E_UNSET_" + strings.ToUpper(randomID())
	writeFile(t, cfg, `{
	admin 127.0.0.1:`+itoa(int64(freePort(t)))+`
	rpm {
		keys_file `+demoKeysPath(t)+`
		admin_token {env.`+unset+`}
	}
}
:`+itoa(int64(freePort(t)))+` {
	rpm
	respond ok
}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, "run", "--config", cfg)
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("caddy started (ran until killed) with admin_token {env.%s} unset:\n%s", unset, out)
	}
	if err == nil || !strings.Contains(string(out), "admin_token") || !strings.Contains(string(out), "resolves to an empty string") {
		t.Fatalf("start with an unset admin_token variable: err=%v, want an error naming admin_token:\n%s", err, out)
	}
}

// TestAdminTokenFile: the token read from admin_token_file guards the
// admin API, and Caddy's GET /config/ shows the path, not the token.
func TestAdminTokenFile(t *testing.T) {
	token := "tok-" + randomID() + randomID()
	path := filepath.Join(t.TempDir(), "admin-token")
	writeFile(t, path, token+"\n")
	c := startCaddy(t, `{
	admin 127.0.0.1:{{.Admin}}
	rpm {
		keys_file `+demoKeysPath(t)+`
		admin_token_file `+path+`
	}
}
:{{.HTTP}} {
	respond ok
}`, params{})

	cfg := c.admin(t, http.MethodGet, "/config/", "")
	if cfg.Status != 200 || !strings.Contains(cfg.Body, `"admin_token_file"`) {
		t.Fatalf("GET /config/: %d %s", cfg.Status, cfg.Body)
	}
	if strings.Contains(cfg.Body, token) {
		t.Errorf("GET /config/ shows the admin token: %s", cfg.Body)
	}
	const status = "/admin/users/1/rpm-status"
	if r := c.admin(t, http.MethodGet, status, ""); r.Status != http.StatusUnauthorized {
		t.Errorf("admin API without token: %d %s, want 401", r.Status, r.Body)
	}
	// The file ends with a newline: the token is the trimmed content.
	if r := c.admin(t, http.MethodGet, status, "", "Authorization: Bearer "+token); r.Status != 200 || !strings.Contains(r.Body, `"user_rpm_limit":60`) {
		t.Errorf("admin API with the file's token: %d %s", r.Status, r.Body)
	}
}

// TestKeyQueryKeepsRawQuery: key_query removes only the key parameter;
// the rest of the raw query reaches the upstream byte for byte (order,
// escapes, '+', ';'), as upstream request signatures need.
func TestKeyQueryKeepsRawQuery(t *testing.T) {
	seen := make(chan string, 10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.URL.RawQuery
		_, _ = w.Write([]byte("upstream"))
	}))
	t.Cleanup(up.Close)
	c := startCaddy(t, `{
	admin 127.0.0.1:{{.Admin}}
	rpm {
		keys_file `+demoKeysPath(t)+`
	}
}
:{{.HTTP}} {
	rpm {
		key_query key
	}
	reverse_proxy {{.Upstream}}
}`, params{Upstream: up.URL})

	const key = "sk-demo-caddy-rpm-key"
	for _, tc := range []struct {
		query, header, want string
	}{
		{"z=%20&a=1&key=" + key + "&b=2;c=3&sig=a+b", "", "z=%20&a=1&b=2;c=3&sig=a+b"},
		{"%6Bey=" + key + "&x=%2F", "", "x=%2F"},
		{"key=" + key, "", ""},
		{"b=2;c=3&a=%41", "Authorization: Bearer " + key, "b=2;c=3&a=%41"},
	} {
		var headers []string
		if tc.header != "" {
			headers = append(headers, tc.header)
		}
		r := c.do(t, http.MethodGet, "/v1/x?"+tc.query, headers...)
		if r.Status != 200 || r.Body != "upstream" {
			t.Fatalf("?%s: %d %s", tc.query, r.Status, r.Body)
		}
		if got := <-seen; got != tc.want {
			t.Errorf("?%s reached the upstream as ?%s, want ?%s", tc.query, got, tc.want)
		}
	}
	// Extraction counts the pairs the removal removes: two are refused.
	r := c.do(t, http.MethodGet, "/v1/x?key="+key+"&a=1&%6Bey="+key)
	authCheckError(t, r, "openai", 400, "MULTIPLE_API_KEYS")
}
