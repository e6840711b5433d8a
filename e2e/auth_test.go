package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// authFormats are the error formats, each served under /<format>/ by
// authSite.
var authFormats = []string{"openai", "anthropic", "problem"}

// authSite has one route per error_format.
const authSite = `handle /openai/* {
		rpm {
			error_format openai
		}
		reverse_proxy {{.Upstream}}
	}
	handle /anthropic/* {
		rpm {
			error_format anthropic
		}
		reverse_proxy {{.Upstream}}
	}
	handle /problem/* {
		rpm {
			error_format problem
		}
		reverse_proxy {{.Upstream}}
	}`

// authKeyWith seeds a key for uid (in gid if non-nil) and applies set, an
// SQL "set" clause for its row, e.g. "status = 'disabled'".
func authKeyWith(t testing.TB, pool *pgxpool.Pool, uid int64, gid *int64, set string) string {
	t.Helper()
	id, raw := storetest.SeedKey(t, pool, uid, gid)
	if set != "" {
		storetest.Exec(t, pool, "update rpm_api_keys set "+set+" where id = $1", id)
	}
	return raw
}

// authCheckError asserts a refusal: status, code, the body shape of the
// format, and WWW-Authenticate on 401.
func authCheckError(t testing.TB, r response, format string, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d (%s): %s", format, r.Status, status, code, r.Body)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("%s: body is not JSON: %v: %q", format, err, r.Body)
	}
	wantType := map[int]string{401: "authentication_error", 403: "permission_error", 400: "invalid_request_error",
		429: "rate_limit_error", 503: "api_error"}[status]
	ct := r.Header.Get("Content-Type")
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	switch format {
	case "openai", "anthropic":
		e, ok := body["error"].(map[string]any)
		// openai's body is {"error": {...}} alone; anthropic's has
		// "type": "error" besides.
		shape := len(body) == 1
		if format == "anthropic" {
			shape = body["type"] == "error"
		}
		if !ok || !shape {
			t.Fatalf("%s body %s", format, r.Body)
		}
		if str(e, "code") != code || str(e, "type") != wantType || str(e, "message") == "" {
			t.Fatalf("%s error %s, want code %s type %s", format, r.Body, code, wantType)
		}
		if !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s content type %q", format, ct)
		}
	case "problem":
		if ct != "application/problem+json" {
			t.Fatalf("problem content type %q", ct)
		}
		if st, _ := body["status"].(float64); int(st) != status {
			t.Fatalf("problem status %v, want %d: %s", body["status"], status, r.Body)
		}
		if str(body, "code") != code || str(body, "title") != http.StatusText(status) || str(body, "detail") == "" {
			t.Fatalf("problem body %s, want code %s", r.Body, code)
		}
	default:
		t.Fatalf("unknown format %q", format)
	}
	wa := r.Header.Get("WWW-Authenticate")
	if status == http.StatusUnauthorized && !strings.HasPrefix(wa, "Bearer") {
		t.Fatalf("%s %s: WWW-Authenticate %q, want Bearer ...", format, code, wa)
	}
	if status != http.StatusUnauthorized && wa != "" {
		t.Fatalf("%s %s: unexpected WWW-Authenticate %q", format, code, wa)
	}
}

// TestAuthTable walks every row of the authentication table (spec §5) in
// every error format, end to end, including the store outage row.
func TestAuthTable(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)

	uid := storetest.SeedUser(t, pool, 0)
	gid := storetest.SeedGroup(t, pool, "auth", 0)
	good := authKeyWith(t, pool, uid, &gid, "")
	disabled := authKeyWith(t, pool, uid, &gid, "status = 'disabled'")
	expired := authKeyWith(t, pool, uid, &gid, "expires_at = now() - interval '1 hour'")
	notYet := authKeyWith(t, pool, uid, &gid, "expires_at = now() + interval '1 hour'")
	quota := authKeyWith(t, pool, uid, &gid, "quota = 10, quota_used = 10")
	quotaLeft := authKeyWith(t, pool, uid, &gid, "quota = 10, quota_used = 9.5")
	white := authKeyWith(t, pool, uid, &gid, "ip_whitelist = '{10.0.0.0/8, 2001:db8::1}'")
	whiteOK := authKeyWith(t, pool, uid, &gid, "ip_whitelist = '{10.0.0.0/8, 127.0.0.1}'")
	black := authKeyWith(t, pool, uid, &gid, "ip_blacklist = '{127.0.0.0/24}'")
	blackOther := authKeyWith(t, pool, uid, &gid, "ip_blacklist = '{192.0.2.1}'")
	offUser := storetest.SeedUser(t, pool, 0)
	storetest.Exec(t, pool, "update rpm_users set status = 'disabled' where id = $1", offUser)
	userOff := authKeyWith(t, pool, offUser, &gid, "")
	offGroup := storetest.SeedGroup(t, pool, "off", 0)
	storetest.Exec(t, pool, "update rpm_groups set status = 'disabled' where id = $1", offGroup)
	groupOff := authKeyWith(t, pool, uid, &offGroup, "")
	noGroup := authKeyWith(t, pool, uid, nil, "")
	// The first failing check wins: a disabled key of a disabled user is
	// API_KEY_DISABLED (a 401), not USER_DISABLED.
	both := authKeyWith(t, pool, offUser, &offGroup, "status = 'disabled'")

	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Prefix: prefix, Upstream: up.URL, Site: authSite})

	type row struct {
		name    string
		headers []string
		status  int
		code    string
	}
	bearer := func(k string) []string { return []string{"Authorization: Bearer " + k} }
	rows := []row{
		{"no key", nil, 401, "API_KEY_REQUIRED"},
		{"other scheme only", []string{"Authorization: Basic dXNlcjpwYXNz"}, 401, "API_KEY_REQUIRED"},
		{"unknown key", bearer("sk-unknown-" + randomID()), 401, "INVALID_API_KEY"},
		{"unknown x-api-key", []string{"x-api-key: sk-unknown-" + randomID()}, 401, "INVALID_API_KEY"},
		{"key disabled", bearer(disabled), 401, "API_KEY_DISABLED"},
		{"key expired", bearer(expired), 401, "API_KEY_EXPIRED"},
		{"quota exhausted", bearer(quota), 403, "API_KEY_QUOTA_EXHAUSTED"},
		{"ip not in whitelist", bearer(white), 403, "IP_NOT_ALLOWED"},
		{"ip in blacklist", bearer(black), 403, "IP_NOT_ALLOWED"},
		{"user disabled", bearer(userOff), 403, "USER_DISABLED"},
		{"group disabled", bearer(groupOff), 403, "GROUP_DISABLED"},
		{"first check wins", bearer(both), 401, "API_KEY_DISABLED"},
	}
	for _, f := range authFormats {
		for _, rw := range rows {
			t.Run(f+"/"+rw.name, func(t *testing.T) {
				r := c.do(t, http.MethodGet, "/"+f+"/v1/models", rw.headers...)
				authCheckError(t, r, f, rw.status, rw.code)
			})
		}
		for name, k := range map[string]string{"good": good, "x-api-key": good, "expires later": notYet,
			"quota left": quotaLeft, "in whitelist": whiteOK, "not in blacklist": blackOther, "no group": noGroup} {
			hdr := bearer(k)
			if name == "x-api-key" {
				hdr = []string{"X-Api-Key: " + k}
			}
			r := c.do(t, http.MethodGet, "/"+f+"/v1/models", hdr...)
			if r.Status != 200 || !strings.Contains(r.Body, `"upstream":true`) {
				t.Fatalf("%s/%s: %d %s", f, name, r.Status, r.Body)
			}
		}
	}
	if n := len(up.headers()); n != 7*len(authFormats) {
		t.Fatalf("upstream saw %d requests, want %d", n, 7*len(authFormats))
	}

	// Store unreachable, nothing cached for the key: 503, never 401. A key
	// outside the key filter is known to be unknown: 401 all the same.
	kfWaitFilterAt(t, c, "/openai/v1/models")
	events := kfKeyEvents(t, c)
	fresh := authKeyWith(t, pool, uid, &gid, "") // exists, never requested
	kfWaitKeyEvents(t, c, events)                // in the filter before the outage
	pg.Block()
	for _, f := range authFormats {
		r := c.get(t, "/"+f+"/v1/models", fresh)
		authCheckError(t, r, f, 503, "AUTH_UNAVAILABLE")
		if r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s uncached existing key: 503 without Retry-After", f)
		}
		authCheckError(t, c.get(t, "/"+f+"/v1/models", "sk-nope-"+randomID()), f, 401, "INVALID_API_KEY")
	}
	pg.Unblock()
	c.waitAdmits(t, 10*time.Second, "/openai/v1/models", fresh)
}

type authErr struct{ r response }

func (e *authErr) Error() string { return testutil.Itoa(int64(e.r.Status)) + " " + e.r.Body }

// waitAdmits waits up to within until a request with key to path is
// answered 200 (the store answering again, say).
func (c *caddyInstance) waitAdmits(t testing.TB, within time.Duration, path, key string) {
	t.Helper()
	testutil.WaitFor(t, within, func() error {
		if r := c.get(t, path, key); r.Status != 200 {
			return &authErr{r}
		}
		return nil
	})
}

// TestAuthClientIPTrustedProxies checks that IP lists judge Caddy's client
// IP: the X-Forwarded-For address behind a trusted proxy, the peer address
// otherwise.
func TestAuthClientIPTrustedProxies(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	white := authKeyWith(t, pool, uid, nil, "ip_whitelist = '{203.0.113.0/24}'")
	black := authKeyWith(t, pool, uid, nil, "ip_blacklist = '{198.51.100.9}'")
	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	p := params{DSN: dsn, Prefix: prefix, Upstream: up.URL}
	plain := startCaddy(t, p)
	p.Options = "servers {\n\ttrusted_proxies static 127.0.0.1/32\n\tclient_ip_headers X-Forwarded-For\n}"
	trusted := startCaddy(t, p)

	check := func(c *caddyInstance, name, key, xff string, want int) {
		t.Helper()
		hdr := []string{"Authorization: Bearer " + key}
		if xff != "" {
			hdr = append(hdr, "X-Forwarded-For: "+xff)
		}
		r := c.do(t, http.MethodGet, "/v1/x", hdr...)
		if r.Status != want {
			t.Fatalf("%s: status %d, want %d: %s", name, r.Status, want, r.Body)
		}
		if want == 403 {
			authCheckError(t, r, "openai", 403, "IP_NOT_ALLOWED")
		}
	}
	// Behind the trusted proxy the forwarded address decides.
	check(trusted, "trusted: whitelisted forwarded address", white, "203.0.113.7", 200)
	check(trusted, "trusted: forwarded chain, client first", white, "203.0.113.7, 127.0.0.1", 200)
	check(trusted, "trusted: forwarded address outside whitelist", white, "10.1.1.1", 403)
	check(trusted, "trusted: no header, peer outside whitelist", white, "", 403)
	check(trusted, "trusted: blacklisted forwarded address", black, "198.51.100.9", 403)
	check(trusted, "trusted: other forwarded address", black, "10.1.1.1", 200)
	// Without trusted proxies the header is ignored: the peer (127.0.0.1)
	// decides.
	check(plain, "untrusted: header ignored for whitelist", white, "203.0.113.7", 403)
	check(plain, "untrusted: header ignored for blacklist", black, "198.51.100.9", 200)
}

// TestAuthPlaceholders checks that the identity placeholders reach the
// upstream and that the key headers are stripped unless keep_credentials.
func TestAuthPlaceholders(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	gid := storetest.SeedGroup(t, pool, "gpt-team", 0)
	storetest.Exec(t, pool, "update rpm_groups set platform = 'openai' where id = $1", gid)
	kid, key := storetest.SeedKey(t, pool, uid, &gid)
	noGroupKey := authKeyWith(t, pool, uid, nil, "")
	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	const headersUp = `
			header_up X-Auth-User {http.auth.user.id}
			header_up X-User {http.rpm.user_id}
			header_up X-Group-Id {http.rpm.group_id}
			header_up X-Group {http.rpm.group_name}
			header_up X-Key-Id {http.rpm.api_key_id}
			header_up X-Platform {http.rpm.platform}`
	c := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL, Site: `handle /keep/* {
		rpm {
			keep_credentials
		}
		reverse_proxy {{.Upstream}} {` + headersUp + `
		}
	}
	handle {
		rpm
		reverse_proxy {{.Upstream}} {` + headersUp + `
		}
	}`})

	hdrs := []string{"Authorization: Bearer " + key, "X-Api-Key: " + key}
	if r := c.do(t, http.MethodGet, "/v1/chat", hdrs...); r.Status != 200 {
		t.Fatalf("strip: %d %s", r.Status, r.Body)
	}
	if r := c.do(t, http.MethodGet, "/keep/v1/chat", hdrs...); r.Status != 200 {
		t.Fatalf("keep: %d %s", r.Status, r.Body)
	}
	if r := c.get(t, "/v1/chat", noGroupKey); r.Status != 200 {
		t.Fatalf("no group: %d %s", r.Status, r.Body)
	}
	seen := up.headers()
	if len(seen) != 3 {
		t.Fatalf("upstream saw %d requests", len(seen))
	}
	want := map[string]string{"X-Auth-User": testutil.Itoa(uid), "X-User": testutil.Itoa(uid), "X-Group-Id": testutil.Itoa(gid),
		"X-Group": "gpt-team", "X-Key-Id": testutil.Itoa(kid), "X-Platform": "openai"}
	for i, h := range seen[:2] {
		for k, v := range want {
			if got := h.Get(k); got != v {
				t.Errorf("request %d: upstream %s = %q, want %q", i, k, got, v)
			}
		}
	}
	if a, x := seen[0].Get("Authorization"), seen[0].Get("X-Api-Key"); a != "" || x != "" {
		t.Errorf("credentials reached the upstream: Authorization %q X-Api-Key %q", a, x)
	}
	if a, x := seen[1].Get("Authorization"), seen[1].Get("X-Api-Key"); a != "Bearer "+key || x != key {
		t.Errorf("keep_credentials: Authorization %q X-Api-Key %q", a, x)
	}
	if g, u := seen[2].Get("X-Group-Id"), seen[2].Get("X-User"); g != "" || u != testutil.Itoa(uid) {
		t.Errorf("no group: X-Group-Id %q X-User %q", g, u)
	}
}
