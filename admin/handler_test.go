package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// keysFile is a keys_file document for the read-only store tests.
const keysFile = `{
  "users":  [{"id": 1, "username": "demo", "status": "active", "rpm_limit": 60}],
  "groups": [{"id": 1, "name": "default", "status": "active", "rpm_limit": 30},
             {"id": 2, "name": "second", "status": "active", "rpm_limit": 5}],
  "api_keys": [{"id": 1, "key": "sk-demo-admin-test-key-0001", "user_id": 1, "group_id": 1, "status": "active"}],
  "rpm_overrides": [{"user_id": 1, "group_id": 2, "rpm_override": 10}]
}`

// newFileBackend returns a backend over a keys_file store.
func newFileBackend(t *testing.T) *testBackend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(keysFile), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.LoadFile(path)
	if err != nil {
		t.Fatalf("load keys file: %v", err)
	}
	return &testBackend{
		st:   st,
		lim:  limiter.NewLocal(func() time.Time { return fixedClock }),
		keys: limiter.Keys{Prefix: "rpmtest:"},
	}
}

// apiCalls is one valid call of every JSON route.
var apiCalls = []struct{ method, path, body string }{
	{http.MethodGet, "/admin/users/1/rpm-status", ""},
	{http.MethodGet, "/admin/groups/1/rpm-overrides", ""},
	{http.MethodPut, "/admin/groups/1/rpm-overrides", `{"entries":[{"user_id":1,"rpm_override":3}]}`},
	{http.MethodDelete, "/admin/groups/1/rpm-overrides", ""},
	{http.MethodPut, "/admin/users/1/groups/1/rpm-override", `{"rpm_override":4}`},
	{http.MethodPatch, "/admin/users/1", `{"rpm_limit":5}`},
	{http.MethodPatch, "/admin/groups/1", `{"status":"active"}`},
	{http.MethodPatch, "/admin/keys/1", `{"status":"disabled"}`},
	{http.MethodDelete, "/admin/auth-cache", ""},
	{http.MethodDelete, "/admin/auth-cache/keys/1", ""},
	{http.MethodGet, "/admin/no-such-route", ""},
}

func TestAdminToken(t *testing.T) {
	b := newFileBackend(t)
	b.token = "s3cret-token"
	h := b.handler()
	for _, c := range apiCalls {
		for name, hdr := range map[string][]string{
			"no token":     nil,
			"wrong token":  {"Authorization", "Bearer s3cret-tokem"},
			"prefix token": {"Authorization", "Bearer s3cret"},
			"basic":        {"Authorization", "Basic czNjcmV0LXRva2Vu"},
			"empty bearer": {"Authorization", "Bearer "},
			"raw token":    {"Authorization", "s3cret-token"},
		} {
			res := call(t, h, c.method, c.path, c.body, hdr...)
			expect(t, res, http.StatusUnauthorized, c.method+" "+c.path+" "+name)
			if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate = %q", c.method, c.path, res.Header.Get("WWW-Authenticate"))
			}
		}
		for _, auth := range []string{"Bearer s3cret-token", "bearer s3cret-token"} {
			if res := call(t, h, c.method, c.path, c.body, "Authorization", auth); res.Code == http.StatusUnauthorized {
				t.Errorf("%s %s with %q: 401 %s", c.method, c.path, auth, res.Raw)
			}
		}
	}
	// Only the authorized auth-cache calls reach the backend (the keys
	// file refuses the writes): 2 routes × 2 spellings.
	if got := b.takeInvalidations(); len(got) != 4 {
		t.Errorf("invalidations = %v, want 4", got)
	}
	// The page is served without the token: it asks for it itself.
	if res := call(t, h, http.MethodGet, "/admin/ui", ""); res.Code != http.StatusOK {
		t.Errorf("GET /admin/ui without token: %d", res.Code)
	}
}

func TestNoTokenConfigured(t *testing.T) {
	b := newFileBackend(t)
	h := b.handler()
	for _, c := range apiCalls {
		if res := call(t, h, c.method, c.path, c.body); res.Code == http.StatusUnauthorized {
			t.Errorf("%s %s without a configured token: 401", c.method, c.path)
		}
	}
}

func TestKeysFileStore(t *testing.T) {
	b := newFileBackend(t)
	h := b.handler()
	for _, c := range apiCalls {
		if c.method == http.MethodGet || strings.HasPrefix(c.path, "/admin/auth-cache") {
			continue
		}
		res := call(t, h, c.method, c.path, c.body)
		expect(t, res, http.StatusConflict, c.method+" "+c.path)
		if !strings.Contains(res.JSON["error"].(string), "read-only") {
			t.Errorf("%s %s: error %q does not say read-only", c.method, c.path, res.JSON["error"])
		}
	}
	if got := b.takeInvalidations(); len(got) != 0 {
		t.Errorf("refused writes invalidated %v", got)
	}

	st := getStatus(t, h, 1)
	want := []groupStatus{
		{GroupID: 1, GroupName: "default", Limit: 30, Source: "group"},
		{GroupID: 2, GroupName: "second", Limit: 10, Source: "override"},
	}
	if st.UserRPMLimit != 60 || len(st.PerGroup) != 2 || st.PerGroup[0] != want[0] || st.PerGroup[1] != want[1] {
		t.Errorf("status = %+v, want groups %+v", st, want)
	}
	res := call(t, h, http.MethodGet, "/admin/groups/2/rpm-overrides", "")
	expect(t, res, http.StatusOK, "list")
	if res.Raw != `{"group_id":2,"entries":[{"user_id":1,"rpm_override":10}]}`+"\n" {
		t.Errorf("list = %s", res.Raw)
	}
	expect(t, call(t, h, http.MethodGet, "/admin/users/7/rpm-status", ""), http.StatusNotFound, "unknown user")
	expect(t, call(t, h, http.MethodGet, "/admin/groups/7/rpm-overrides", ""), http.StatusNotFound, "unknown group")
}

func TestMethodNotAllowed(t *testing.T) {
	h := newFileBackend(t).handler()
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/admin/users/1/rpm-status", "GET, HEAD, OPTIONS"},
		{http.MethodDelete, "/admin/users/1/rpm-status", "GET, HEAD, OPTIONS"},
		{http.MethodPost, "/admin/groups/1/rpm-overrides", "DELETE, GET, HEAD, OPTIONS, PUT"},
		{http.MethodPatch, "/admin/groups/1/rpm-overrides", "DELETE, GET, HEAD, OPTIONS, PUT"},
		{http.MethodGet, "/admin/users/1/groups/1/rpm-override", "OPTIONS, PUT"},
		{http.MethodDelete, "/admin/users/1/groups/1/rpm-override", "OPTIONS, PUT"},
		{http.MethodGet, "/admin/users/1", "OPTIONS, PATCH"},
		{http.MethodPut, "/admin/groups/1", "OPTIONS, PATCH"},
		{http.MethodDelete, "/admin/keys/1", "OPTIONS, PATCH"},
		{http.MethodPost, "/admin/auth-cache", "DELETE, OPTIONS"},
		{http.MethodGet, "/admin/auth-cache/users/1", "DELETE, OPTIONS"},
	} {
		res := call(t, h, c.method, c.path, "")
		expect(t, res, http.StatusMethodNotAllowed, c.method+" "+c.path)
		if got := res.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	// A bad id still answers 405 first for a wrong method.
	expect(t, call(t, h, http.MethodPost, "/admin/users/abc/rpm-status", ""), http.StatusMethodNotAllowed, "wrong method, bad id")
	res := call(t, h, http.MethodOptions, "/admin/groups/1/rpm-overrides", "")
	if res.Code != http.StatusNoContent || res.Header.Get("Allow") == "" {
		t.Errorf("OPTIONS: %d, Allow %q", res.Code, res.Header.Get("Allow"))
	}
	if res := call(t, h, http.MethodHead, "/admin/users/1/rpm-status", ""); res.Code != http.StatusOK {
		t.Errorf("HEAD rpm-status: %d", res.Code)
	}
}

func TestNotFound(t *testing.T) {
	h := newFileBackend(t).handler()
	for _, p := range []string{"/admin/", "/admin/nope", "/admin/users", "/admin/users/1/rpm-status/extra", "/admin/groups/1/overrides", "/admin/keys"} {
		expect(t, call(t, h, http.MethodGet, p, ""), http.StatusNotFound, p)
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newFileBackend(t).handler()
	body := `{"entries":[` + strings.Repeat(`{"user_id":1,"rpm_override":1},`, 40000) + `{"user_id":2,"rpm_override":1}]}`
	expect(t, call(t, h, http.MethodPut, "/admin/groups/1/rpm-overrides", body), http.StatusRequestEntityTooLarge, "large body")
}

func TestBackendNotConfigured(t *testing.T) {
	h := newHandler(func() (Core, string, error) { return nil, "", errNotConfigured }, nil)
	res := call(t, h, http.MethodGet, "/admin/users/1/rpm-status", "")
	expect(t, res, http.StatusServiceUnavailable, "no app")
	if res.JSON["error"] != "rpm app is not configured" {
		t.Errorf("error = %q", res.JSON["error"])
	}
	h = newHandler(func() (Core, string, error) { return nil, "", errors.New("loading rpm app module: boom") }, nil)
	expect(t, call(t, h, http.MethodDelete, "/admin/auth-cache", ""), http.StatusServiceUnavailable, "failed app")
	// The page does not need the app.
	if res := call(t, h, http.MethodGet, "/admin/ui", ""); res.Code != http.StatusOK {
		t.Errorf("GET /admin/ui without the app: %d", res.Code)
	}
}

func TestModule(t *testing.T) {
	mod, err := caddy.GetModule("admin.api.rpm")
	if err != nil {
		t.Fatalf("module not registered: %v", err)
	}
	a, ok := mod.New().(*AdminAPI)
	if !ok {
		t.Fatalf("New() = %T", mod.New())
	}
	if err := a.Provision(caddy.Context{}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	routes := a.Routes()
	if len(routes) != 1 || routes[0].Pattern != "/admin/" {
		t.Fatalf("routes = %+v, want one /admin/ pattern", routes)
	}
	// No config is running: the routes answer 503, not a panic.
	res := call(t, adminHandlerFunc(routes[0].Handler), http.MethodGet, "/admin/users/1/rpm-status", "")
	expect(t, res, http.StatusServiceUnavailable, "no running config")
}

// adminHandlerFunc adapts a caddy.AdminHandler for call, answering its
// errors as Caddy's admin endpoint does (see TestModuleOnAdminEndpoint
// for the real one).
func adminHandlerFunc(h caddy.AdminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r); err != nil {
			writeAPIError(w, err)
		}
	})
}

// TestAdminTokenBesideBasicAuth: behind a site's basic_auth the request
// carries two Authorization headers, the site's Basic credentials and the
// admin token; the token is found in either position, a wrong one in
// neither.
func TestAdminTokenBesideBasicAuth(t *testing.T) {
	for name, tc := range map[string]struct {
		values []string
		want   bool
	}{
		"basic then bearer":       {[]string{"Basic b3A6cHc=", "Bearer s3cret-token"}, true},
		"bearer then basic":       {[]string{"Bearer s3cret-token", "Basic b3A6cHc="}, true},
		"basic then wrong bearer": {[]string{"Basic b3A6cHc=", "Bearer s3cret-tokem"}, false},
		"two wrong bearers":       {[]string{"Bearer a", "Bearer b"}, false},
		"basic only":              {[]string{"Basic b3A6cHc="}, false},
	} {
		req := httptest.NewRequest(http.MethodGet, "/admin/users/1/rpm-status", nil)
		for _, v := range tc.values {
			req.Header.Add("Authorization", v)
		}
		if got := authorized(req, "s3cret-token"); got != tc.want {
			t.Errorf("%s: authorized = %v, want %v", name, got, tc.want)
		}
	}
}
