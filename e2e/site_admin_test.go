package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestSiteAdminServesPageToBrowsers checks the rpm_admin directive: the
// page opens by typed address (no Origin, as a browser navigates) where
// Caddy's admin endpoint refuses it, and the API behind it needs the token.
func TestSiteAdminServesPageToBrowsers(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 9)
	c := startCaddy(t, params{DSN: dsn, Redis: "off", Global: "admin_token s3cret", Site: `rpm_admin
	respond "site"`})

	navigate := []string{"Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: document"}
	if r := c.admin(t, http.MethodGet, "/admin/ui", "", navigate...); r.Status != http.StatusForbidden {
		t.Fatalf("admin endpoint answered a typed navigation with %d; this test documents Caddy's 403", r.Status)
	}
	page := c.do(t, http.MethodGet, "/admin/ui", navigate...)
	if page.Status != 200 || !strings.Contains(page.Body, "<html") {
		t.Fatalf("site /admin/ui: %d %.200s", page.Status, page.Body)
	}
	path := "/admin/users/" + testutil.Itoa(uid) + "/rpm-status"
	if r := c.do(t, http.MethodGet, path); r.Status != http.StatusUnauthorized {
		t.Fatalf("API on the site without token: %d, want 401", r.Status)
	}
	r := c.do(t, http.MethodGet, path, "Authorization: Bearer s3cret")
	if r.Status != 200 || !strings.Contains(r.Body, `"user_rpm_limit":9`) {
		t.Fatalf("API on the site with token: %d %s", r.Status, r.Body)
	}
	if r := c.get(t, "/other", ""); r.Status != 200 || r.Body != "site" {
		t.Fatalf("non-admin path: %d %q, want the next handler", r.Status, r.Body)
	}
}

// TestSiteAdminNeedsToken: a site is reachable from outside, so rpm_admin
// refuses to start without admin_token.
func TestSiteAdminNeedsToken(t *testing.T) {
	cfg := writeCaddyfile(t, t.TempDir(), params{KeysFile: demoKeysPath(t), Redis: "off", Site: "rpm_admin"})
	out, err := runCaddyCommand(t, "validate", "--config", cfg)
	if err == nil || !strings.Contains(out, "admin_token") {
		t.Fatalf("validate without admin_token: err=%v\n%s", err, out)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// demoKeysPath is the repository's demo keys file, absolute.
func demoKeysPath(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("../demo-keys.json")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runCaddyCommand runs the test binary with args and returns its output.
func runCaddyCommand(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(caddyBin, args...).CombinedOutput()
	return string(out), err
}

// TestSiteAdminAfterSiteAuth: rpm_admin runs after the site's basic_auth,
// so the site's authentication applies to the admin page and API first and
// the admin token is still required on top. The rpm directive, ordered
// before basic_auth, is matched away from the admin paths as the README
// says to.
func TestSiteAdminAfterSiteAuth(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 9)
	_, key := storetest.SeedKey(t, pool, uid, nil)
	hash, err := runCaddyCommand(t, "hash-password", "--plaintext", "pw")
	if err != nil {
		t.Fatalf("hash-password: %v\n%s", err, hash)
	}
	c := startCaddy(t, params{DSN: dsn, Redis: "off", Global: "admin_token s3cret", Site: `@api not path /admin /admin/*
	rpm @api {
		key_header x-api-key
	}
	basic_auth {
		op ` + strings.TrimSpace(hash) + `
	}
	rpm_admin
	respond "site"`})

	basic := "Authorization: Basic b3A6cHc=" // op:pw
	status := "/admin/users/" + testutil.Itoa(uid) + "/rpm-status"
	fromBasicAuth := func(what string, r response) {
		t.Helper()
		if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s: %d %q, want 401 from basic_auth", what, r.Status, r.Header.Get("WWW-Authenticate"))
		}
	}
	fromBasicAuth("page without credentials", c.do(t, http.MethodGet, "/admin/ui"))
	fromBasicAuth("API without credentials", c.do(t, http.MethodGet, status))
	fromBasicAuth("API with only the admin token", c.do(t, http.MethodGet, status, "Authorization: Bearer s3cret"))

	if r := c.do(t, http.MethodGet, "/admin/ui", basic); r.Status != 200 || !strings.Contains(r.Body, "<html") {
		t.Errorf("page with basic auth: %d %.200s", r.Status, r.Body)
	}
	r := c.do(t, http.MethodGet, status, basic)
	if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") ||
		!strings.Contains(r.Body, "admin token") {
		t.Errorf("API with basic auth but no admin token: %d %q %s, want 401 from rpm_admin", r.Status, r.Header.Get("WWW-Authenticate"), r.Body)
	}
	r = c.do(t, http.MethodGet, status, basic, "Authorization: Bearer s3cret")
	if r.Status != 200 || !strings.Contains(r.Body, `"user_rpm_limit":9`) {
		t.Errorf("API with basic auth and admin token: %d %s", r.Status, r.Body)
	}

	// Other paths: basic_auth and an API key, both.
	if r := c.do(t, http.MethodGet, "/v1/x", basic); r.Status != http.StatusUnauthorized || !strings.Contains(r.Body, "API_KEY_REQUIRED") {
		t.Errorf("site path with basic auth, no key: %d %s", r.Status, r.Body)
	}
	if r := c.do(t, http.MethodGet, "/v1/x", basic, "x-api-key: "+key); r.Status != 200 || r.Body != "site" {
		t.Errorf("site path with basic auth and key: %d %s", r.Status, r.Body)
	}
}
