package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestAdminTokenUnsetVariableFailsStart: admin_token {env.X} with X unset
// must not start Caddy with an unauthenticated admin API; the error names
// admin_token.
func TestAdminTokenUnsetVariableFailsStart(t *testing.T) {
	unset := "RPM_E2E_UNSET_" + strings.ToUpper(randomID())
	out := runCaddyFailing(t, params{KeysFile: demoKeysPath(t), Redis: "off", Global: "admin_token {env." + unset + "}"})
	if !strings.Contains(out, "admin_token") || !strings.Contains(out, "resolves to an empty string") {
		t.Fatalf("start with an unset admin_token variable: want an error naming admin_token:\n%s", out)
	}
}

// TestAdminTokenFile: the token read from admin_token_file guards the
// admin API, and Caddy's GET /config/ shows the path, not the token.
func TestAdminTokenFile(t *testing.T) {
	token := "tok-" + randomID() + randomID()
	path := filepath.Join(t.TempDir(), "admin-token")
	writeFile(t, path, token+"\n")
	c := startCaddy(t, params{KeysFile: demoKeysPath(t), Redis: "off", Global: "admin_token_file " + path,
		Site: "respond ok"})

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
	c := startCaddy(t, params{KeysFile: demoKeysPath(t), Redis: "off", RPM: "key_query key", Upstream: up.URL})

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

// TestIPListMappedRangeKeysFile: an IPv4-mapped range in a keys file's IP
// list matches an IPv4 client, in both lists, for a real request from
// 127.0.0.1.
func TestIPListMappedRangeKeysFile(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	writeFile(t, keys, `{
  "users": [{"id": 1}],
  "api_keys": [
    {"id": 1, "key": "sk-e2e-mapped-black", "user_id": 1, "ip_blacklist": ["::ffff:127.0.0.0/104"]},
    {"id": 2, "key": "sk-e2e-mapped-white", "user_id": 1, "ip_whitelist": ["::ffff:127.0.0.0/104"]},
    {"id": 3, "key": "sk-e2e-mapped-other", "user_id": 1, "ip_whitelist": ["::ffff:10.0.0.0/104"]}
  ]
}`)
	c := startCaddy(t, params{KeysFile: keys, Redis: "off"})
	authCheckError(t, c.get(t, "/v1/x", "sk-e2e-mapped-black"), "openai", 403, "IP_NOT_ALLOWED")
	authCheckError(t, c.get(t, "/v1/x", "sk-e2e-mapped-other"), "openai", 403, "IP_NOT_ALLOWED")
	if r := c.get(t, "/v1/x", "sk-e2e-mapped-white"); r.Status != 200 || r.Body != "ok" {
		t.Fatalf("whitelisted by a mapped range: %d %s", r.Status, r.Body)
	}
}

// TestKeysFileRejectsUnusableRecords: a keys file with a key no client can
// send, or an IP range that cannot be read, does not load; the error names
// the record and not the key.
func TestKeysFileRejectsUnusableRecords(t *testing.T) {
	for name, tc := range map[string]struct{ keys, want string }{
		"key with a space": {`{"id": 2, "key": "sk-e2e secret", "user_id": 1}`, "api_keys[1]: key: the API key contains characters that are not printable ASCII"},
		"key too long":     {`{"id": 2, "key": "sk-e2e-secret` + strings.Repeat("x", 300) + `", "user_id": 1}`, "api_keys[1]: key: the API key is longer than 256 bytes"},
		"short mapped range": {`{"id": 2, "key": "sk-e2e-secret", "user_id": 1, "ip_whitelist": ["::ffff:127.0.0.0/90"]}`,
			"api_keys[1]: api key 2: ip_whitelist"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "keys.json"), `{"users": [{"id": 1}], "api_keys": [
  {"id": 1, "key": "sk-e2e-fine", "user_id": 1}, `+tc.keys+`]}`)
			cfg := writeCaddyfile(t, dir, params{KeysFile: filepath.Join(dir, "keys.json"), Redis: "off", Site: "rpm"})
			out, err := runCaddyCommand(t, "validate", "--config", cfg)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("validate: err=%v, want an error containing %q:\n%s", err, tc.want, out)
			}
			if strings.Contains(out, "e2e secret") || strings.Contains(out, "sk-e2e-secret") {
				t.Fatalf("the error shows the raw key:\n%s", out)
			}
		})
	}
}

// TestIPListInvalidPostgresRowFailsClosed: a Postgres row whose IP list
// has an entry that is not an address or range refuses the key with 403
// IP_NOT_ALLOWED and a logged warning, instead of 503 or admitting; a
// mapped range in a row matches an IPv4 client.
func TestIPListInvalidPostgresRowFailsClosed(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	bad := authKeyWith(t, pool, uid, nil, `ip_whitelist = '{127.0.0.0/8,not-an-ip}'`)
	nullEntry := authKeyWith(t, pool, uid, nil, `ip_blacklist = '{NULL}'`)
	mapped := authKeyWith(t, pool, uid, nil, `ip_blacklist = '{::ffff:127.0.0.0/104}'`)
	fine := authKeyWith(t, pool, uid, nil, `ip_whitelist = '{::ffff:127.0.0.1}'`)
	c := startCaddy(t, params{DSN: dsn, Redis: "off"})
	authCheckError(t, c.get(t, "/v1/x", bad), "openai", 403, "IP_NOT_ALLOWED")
	authCheckError(t, c.get(t, "/v1/x", nullEntry), "openai", 403, "IP_NOT_ALLOWED")
	authCheckError(t, c.get(t, "/v1/x", mapped), "openai", 403, "IP_NOT_ALLOWED")
	if r := c.get(t, "/v1/x", fine); r.Status != 200 {
		t.Fatalf("key whitelisted for 127.0.0.1: %d %s", r.Status, r.Body)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := strings.Count(c.Logs(), "api key refused: invalid IP list entry"); n != 2 {
			return fmt.Errorf("%d warnings, want 2 (one per bad key):\n%s", n, c.Logs())
		}
		return nil
	})
	if logs := c.Logs(); strings.Contains(logs, bad) || strings.Contains(logs, nullEntry) {
		t.Fatal("the log shows a raw key")
	}
}
