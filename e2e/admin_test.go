package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// The admin API's acceptance tests through a real Caddy binary: rpm-status,
// override management, "clear all", writes taking effect on the next
// request, the admin token and the cache flush. Helpers here are prefixed
// adm and shared with propagation_test.go, reconnect_test.go and
// cli_test.go.

// admEnv is one test's Postgres schema, Redis prefix and upstream, shared by
// the Caddy instances it starts.
type admEnv struct {
	pool   *pgxpool.Pool
	dsn    string
	prefix string // key_prefix
	ns     string // the namespaced prefix of the Redis keys (redisNS)
	rdb    *redis.Client
	up     *upstream
}

func admSetup(t *testing.T) *admEnv {
	t.Helper()
	pool, dsn := storetest.NewSchema(t)
	rdb, prefix := redistest.Shared(t)
	return &admEnv{pool: pool, dsn: dsn, prefix: prefix, ns: pgRedisNS(t, prefix, pool),
		rdb: rdb, up: newUpstream(t)}
}

// start runs one Caddy instance on the environment, with TTLs long enough
// that no test result can be explained by an expiry and a Redis timeout
// long enough that a busy machine never makes a limit check fail open;
// global adds lines to the rpm app block.
func (e *admEnv) start(t *testing.T, global string) *caddyInstance {
	t.Helper()
	return startCaddy(t, params{DSN: e.dsn, Prefix: e.prefix, Upstream: e.up.URL,
		Cache:  "l1_ttl 5m\nl2_ttl 5m\nnegative_ttl 5m",
		Global: "redis_timeout 2s\n" + global})
}

// admWant fails unless r has the status.
func admWant(t testing.TB, what string, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.Status, status, r.Body)
	}
}

// admTail returns the last n lines of c's log.
func admTail(c *caddyInstance, n int) string {
	lines := strings.Split(strings.TrimSpace(c.Logs()), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// admDecode decodes a JSON answer.
func admDecode(t testing.TB, r response, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.Body), v); err != nil {
		t.Fatalf("decode %q: %v", r.Body, err)
	}
}

// admExpect sends a request with key through c and checks status and, if
// code is not "", the error code.
func admExpect(t testing.TB, c *caddyInstance, key string, status int, code string) {
	t.Helper()
	r := c.get(t, "/v1/models", key)
	if r.Status != status || (code != "" && r.code() != code) {
		t.Fatalf("gateway: status %d code %q, want %d %q: %s", r.Status, r.code(), status, code, r.Body)
	}
}

type admGroupStatus struct {
	GroupID   int64  `json:"group_id"`
	GroupName string `json:"group_name"`
	Used      int64  `json:"used"`
	Limit     int64  `json:"limit"`
	Source    string `json:"source"`
}

type admStatus struct {
	UserID         int64            `json:"user_id"`
	UserRPMUsed    int64            `json:"user_rpm_used"`
	UserRPMLimit   int64            `json:"user_rpm_limit"`
	PerGroup       []admGroupStatus `json:"per_group"`
	WindowResetsIn int64            `json:"window_resets_in"`
	WindowResetsAt string           `json:"window_resets_at"`
}

// TestAdminAPIStatus checks rpm-status through Caddy after real traffic:
// counts from Redis, limits and sources from Postgres, groups by id, and
// window fields on the Redis clock.
func TestAdminAPIStatus(t *testing.T) {
	e := admSetup(t)
	uid := storetest.SeedUser(t, e.pool, 20)
	g1 := storetest.SeedGroup(t, e.pool, "group-one", 10)
	g2 := storetest.SeedGroup(t, e.pool, "group-two", 50)
	if g1 >= g2 {
		t.Fatalf("group ids %d, %d: want group-one first", g1, g2)
	}
	storetest.SeedOverride(t, e.pool, uid, g2, 7)
	// Keys in groups 2, 1, 2 and one without a group.
	_, k2a := storetest.SeedKey(t, e.pool, uid, &g2)
	_, k1 := storetest.SeedKey(t, e.pool, uid, &g1)
	_, k2b := storetest.SeedKey(t, e.pool, uid, &g2)
	storetest.SeedKey(t, e.pool, uid, nil)
	c := e.start(t, "")
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)

	for _, k := range []string{k1, k2a, k1, k2b, k1} {
		admExpect(t, c, k, 200, "")
	}
	before, err := e.rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	r := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
	admWant(t, "rpm-status", r, 200)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
	var st admStatus
	admDecode(t, r, &st)
	want := []admGroupStatus{
		{g1, "group-one", 3, 10, "group"},
		{g2, "group-two", 2, 7, "override"},
	}
	if st.UserID != uid || st.UserRPMUsed != 5 || st.UserRPMLimit != 20 || fmt.Sprint(st.PerGroup) != fmt.Sprint(want) {
		t.Fatalf("rpm-status = %+v\nwant user %d used 5 limit 20 per_group %+v", st, uid, want)
	}
	// Window: resets_in on the Redis clock (±1 s), resets_at RFC 3339 and
	// consistent with it.
	wantIn := 60 - before.Unix()%60
	if st.WindowResetsIn < 1 || st.WindowResetsIn > 60 || st.WindowResetsIn < wantIn-1 || st.WindowResetsIn > wantIn+1 {
		t.Errorf("window_resets_in %d, Redis TIME says %d", st.WindowResetsIn, wantIn)
	}
	at, err := time.Parse(time.RFC3339, st.WindowResetsAt)
	if err != nil {
		t.Fatalf("window_resets_at %q: %v", st.WindowResetsAt, err)
	}
	windowEnd := before.Add(redistest.UntilWindowEnd(before))
	if d := at.Sub(windowEnd); d < -time.Second || d > time.Second {
		t.Errorf("window_resets_at %s, Redis window ends %s", at, windowEnd.UTC())
	}

	admWant(t, "unknown user", c.admin(t, http.MethodGet, "/admin/users/999999999/rpm-status", ""), 404)
	admWant(t, "id abc", c.admin(t, http.MethodGet, "/admin/users/abc/rpm-status", ""), 400)
}

// TestAdminAPIReplaceOverrides checks PUT /admin/groups/{id}/rpm-overrides
// through Caddy against the database: the set is replaced, null removes,
// invalid bodies and unknown users change nothing.
func TestAdminAPIReplaceOverrides(t *testing.T) {
	e := admSetup(t)
	a := storetest.SeedUser(t, e.pool, 0)
	b := storetest.SeedUser(t, e.pool, 0)
	cu := storetest.SeedUser(t, e.pool, 0)
	g := storetest.SeedGroup(t, e.pool, "", 10)
	storetest.SeedOverride(t, e.pool, a, g, 5)
	storetest.SeedOverride(t, e.pool, b, g, 6)
	c := e.start(t, "")
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	r := c.admin(t, http.MethodPut, path, fmt.Sprintf(
		`{"entries":[{"user_id":%d,"rpm_override":9},{"user_id":%d,"rpm_override":3},{"user_id":%d,"rpm_override":null}]}`, a, cu, b))
	admWant(t, "replace", r, 200)
	want := map[int64]int64{a: 9, cu: 3}
	if got := storetest.Overrides(t, e.pool, g); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("db after replace: %v, want %v", got, want)
	}
	var body struct {
		GroupID int64 `json:"group_id"`
		Entries []struct {
			UserID      int64  `json:"user_id"`
			RPMOverride *int64 `json:"rpm_override"`
		} `json:"entries"`
	}
	admDecode(t, r, &body)
	if body.GroupID != g || len(body.Entries) != 2 {
		t.Fatalf("replace answer: %s", r.Body)
	}
	admDecode(t, c.admin(t, http.MethodGet, path, ""), &body)
	if len(body.Entries) != 2 || body.Entries[0].UserID != min(a, cu) {
		t.Fatalf("GET after replace: %+v", body)
	}

	for name, bad := range map[string]string{
		"negative":     fmt.Sprintf(`{"entries":[{"user_id":%d,"rpm_override":1},{"user_id":%d,"rpm_override":-1}]}`, a, b),
		"unknown user": fmt.Sprintf(`{"entries":[{"user_id":%d,"rpm_override":1},{"user_id":999999999,"rpm_override":2}]}`, a),
	} {
		r := c.admin(t, http.MethodPut, path, bad)
		if r.Status < 400 || r.Status > 499 || !strings.Contains(r.Body, `"error"`) {
			t.Errorf("%s: status %d %s, want 4xx with an error", name, r.Status, r.Body)
		}
		if name == "negative" && r.Status != 400 {
			t.Errorf("negative: status %d, want 400", r.Status)
		}
		if got := storetest.Overrides(t, e.pool, g); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s changed the database: %v, want %v", name, got, want)
		}
	}
	admWant(t, "unknown group", c.admin(t, http.MethodPut, "/admin/groups/999999999/rpm-overrides", `{"entries":[]}`), 404)

	// An empty set removes everything.
	admWant(t, "replace with []", c.admin(t, http.MethodPut, path, `{"entries":[]}`), 200)
	if got := storetest.Overrides(t, e.pool, g); len(got) != 0 {
		t.Fatalf("db after replace with []: %v", got)
	}
}

// TestAdminAPIClearAll checks "clear all" through Caddy: it answers the
// number cleared, is idempotent, and ten concurrent calls run one DELETE
// statement in Postgres (counted by a statement-level trigger).
func TestAdminAPIClearAll(t *testing.T) {
	e := admSetup(t)
	g := storetest.SeedGroup(t, e.pool, "", 10)
	other := storetest.SeedGroup(t, e.pool, "", 10)
	for range 3 {
		u := storetest.SeedUser(t, e.pool, 0)
		storetest.SeedOverride(t, e.pool, u, g, 4)
		storetest.SeedOverride(t, e.pool, u, other, 4)
	}
	deletes := storetest.CountOverrideDeletes(t, e.pool)
	c := e.start(t, "")
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	// Hold a lock that blocks DELETE on the table so the first call stays in
	// flight while the other nine arrive.
	hold := storetest.HoldLock(t, e.pool, `lock table rpm_user_group_overrides in share row exclusive mode`)
	var wg sync.WaitGroup
	results := make([]response, 10)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.admin(t, http.MethodDelete, path, "")
		}()
	}
	hold.WaitFor(1)         // a DELETE waits on the lock
	time.Sleep(time.Second) // the other nine requests arrive meanwhile
	hold.Release()
	wg.Wait()
	for i, r := range results {
		admWant(t, fmt.Sprintf("concurrent clear %d", i), r, 200)
		var res struct{ GroupID, Cleared int64 }
		admDecode(t, r, &res)
		if res.Cleared != 3 {
			t.Errorf("concurrent clear %d: %s, want cleared 3 (one shared delete)", i, r.Body)
		}
	}
	if n := deletes(); n != 1 {
		t.Fatalf("ten concurrent clears ran %d DELETE statements, want 1", n)
	}
	if got := storetest.Overrides(t, e.pool, g); len(got) != 0 {
		t.Fatalf("overrides left after clear: %v", got)
	}
	if got := storetest.Overrides(t, e.pool, other); len(got) != 3 {
		t.Fatalf("other group's overrides: %v, want 3 untouched", got)
	}

	r := c.admin(t, http.MethodDelete, path, "")
	admWant(t, "second clear", r, 200)
	if !strings.Contains(r.Body, `"cleared":0`) || !strings.Contains(r.Body, `"group_id":`+testutil.Itoa(g)) {
		t.Fatalf("second clear: %s", r.Body)
	}
	if n := deletes(); n != 2 {
		t.Fatalf("after a second clear: %d DELETE statements, want 2", n)
	}
	admWant(t, "clear unknown group", c.admin(t, http.MethodDelete, "/admin/groups/999999999/rpm-overrides", ""), 404)
}

// TestAdminAPIClearAllAfterAPutRunsItsOwnDelete: clear #1 is held in the
// database, a PUT replaces the group's set meanwhile, and clear #2 arrives
// while #1 is still held. #2 must not share #1's answer (#1's delete may not
// see the PUT's rows): it runs its own delete, the set ends empty, and each
// clear reports what it deleted.
func TestAdminAPIClearAllAfterAPutRunsItsOwnDelete(t *testing.T) {
	e := admSetup(t)
	g := storetest.SeedGroup(t, e.pool, "", 10)
	var entries []string
	for range 3 {
		u := storetest.SeedUser(t, e.pool, 0)
		storetest.SeedOverride(t, e.pool, u, g, 4)
		entries = append(entries, fmt.Sprintf(`{"user_id":%d,"rpm_override":4}`, u))
	}
	for range 2 {
		entries = append(entries, fmt.Sprintf(`{"user_id":%d,"rpm_override":6}`, storetest.SeedUser(t, e.pool, 0)))
	}
	c := e.start(t, "")
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	// A test transaction takes KEY SHARE locks on the group's three rows: a
	// delete of them waits for it, while the PUT below (which keeps those
	// rows at their values and adds two) does not, since its upsert locks
	// them in a mode KEY SHARE allows.
	hold := storetest.HoldLock(t, e.pool, `select 1 from rpm_user_group_overrides where group_id = $1 for key share`, g)

	first, second := make(chan response, 1), make(chan response, 1)
	go func() { first <- c.admin(t, http.MethodDelete, path, "") }()
	hold.WaitFor(1) // clear #1 waits on the lock
	put := c.admin(t, http.MethodPut, path, `{"entries":[`+strings.Join(entries, ",")+`]}`)
	admWant(t, "PUT while clear #1 is held", put, 200)
	if got := storetest.Overrides(t, e.pool, g); len(got) != 5 {
		t.Fatalf("after the PUT: %v, want 5 overrides", got)
	}
	go func() { second <- c.admin(t, http.MethodDelete, path, "") }()
	// Its own delete waits on the lock too; a joined #2 sends none, so wait
	// a bounded while rather than for ever.
	for deadline := time.Now().Add(3 * time.Second); hold.Waiting() < 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case r := <-first:
		t.Fatalf("clear #1 answered while held: %d %s", r.Status, r.Body)
	default:
	}
	hold.Release()
	var res [2]struct{ GroupID, Cleared int64 }
	for i, ch := range []chan response{first, second} {
		r := <-ch
		admWant(t, fmt.Sprintf("clear #%d", i+1), r, 200)
		admDecode(t, r, &res[i])
	}
	if got := storetest.Overrides(t, e.pool, g); len(got) != 0 {
		t.Errorf("overrides left after both clears answered: %v", got)
	}
	if res[0].Cleared != 3 || res[1].Cleared != 2 {
		t.Errorf("cleared %d and %d, want 3 (the rows before the PUT) and 2 (the rows the PUT added)",
			res[0].Cleared, res[1].Cleared)
	}
}

// TestAdminAPIWritesApplyOnNextRequest checks that every admin write is
// enforced by the very next request, with TTLs of minutes so no expiry can
// explain it.
func TestAdminAPIWritesApplyOnNextRequest(t *testing.T) {
	e := admSetup(t)
	// Group limit.
	u1 := storetest.SeedUser(t, e.pool, 0)
	g1 := storetest.SeedGroup(t, e.pool, "", 2)
	_, k1 := storetest.SeedKey(t, e.pool, u1, &g1)
	// User limit.
	u2 := storetest.SeedUser(t, e.pool, 1)
	_, k2 := storetest.SeedKey(t, e.pool, u2, nil)
	// Overrides and key status.
	u3 := storetest.SeedUser(t, e.pool, 0)
	g3 := storetest.SeedGroup(t, e.pool, "", 100)
	kid3, k3 := storetest.SeedKey(t, e.pool, u3, &g3)
	c := e.start(t, "")
	redistest.WaitForWindow(t, e.rdb, 25*time.Second)
	patch := func(path, body string) {
		t.Helper()
		admWant(t, "PATCH "+path+" "+body, c.admin(t, http.MethodPatch, path, body), 200)
	}
	put := func(path, body string) {
		t.Helper()
		admWant(t, "PUT "+path+" "+body, c.admin(t, http.MethodPut, path, body), 200)
	}
	// limitWrites PATCHes the rpm limit and status at path (a group or a
	// user) and checks each on key's next request: raised to raise it
	// admits, lowered to lower it refuses with exceeded, disabled it
	// refuses 403 with disabled, active again it admits.
	limitWrites := func(t *testing.T, path, key string, raise, lower int, exceeded, disabled string) {
		t.Helper()
		patch(path, fmt.Sprintf(`{"rpm_limit":%d}`, raise))
		admExpect(t, c, key, 200, "")
		patch(path, fmt.Sprintf(`{"rpm_limit":%d}`, lower))
		admExpect(t, c, key, 429, exceeded)
		patch(path, `{"status":"disabled","rpm_limit":0}`)
		admExpect(t, c, key, 403, disabled)
		patch(path, `{"status":"active"}`)
		admExpect(t, c, key, 200, "")
	}

	t.Run("group limit", func(t *testing.T) {
		admExpect(t, c, k1, 200, "")
		admExpect(t, c, k1, 200, "")
		admExpect(t, c, k1, 429, "GROUP_RPM_EXCEEDED")
		admExpect(t, c, k1, 429, "GROUP_RPM_EXCEEDED")
		limitWrites(t, "/admin/groups/"+testutil.Itoa(g1), k1, 5, 1, "GROUP_RPM_EXCEEDED", "GROUP_DISABLED")
	})
	t.Run("user limit", func(t *testing.T) {
		admExpect(t, c, k2, 200, "")
		admExpect(t, c, k2, 429, "USER_RPM_EXCEEDED")
		limitWrites(t, "/admin/users/"+testutil.Itoa(u2), k2, 10, 2, "USER_RPM_EXCEEDED", "USER_DISABLED")
	})
	t.Run("override set and cleared", func(t *testing.T) {
		admExpect(t, c, k3, 200, "")
		admExpect(t, c, k3, 200, "") // (u3, g3) count 2
		one := "/admin/users/" + testutil.Itoa(u3) + "/groups/" + testutil.Itoa(g3) + "/rpm-override"
		put(one, `{"rpm_override":2}`)
		admExpect(t, c, k3, 429, "GROUP_RPM_EXCEEDED")
		put(one, `{"rpm_override":null}`)
		admExpect(t, c, k3, 200, "")   // count 3 under the group's 100
		put(one, `{"rpm_override":0}`) // exempt
		admExpect(t, c, k3, 200, "")
		put(one, `{"rpm_override":3}`)
		admExpect(t, c, k3, 429, "GROUP_RPM_EXCEEDED")
		put(one, `{"rpm_override":null}`)
		admExpect(t, c, k3, 200, "") // count 4
	})
	t.Run("replace all and clear all", func(t *testing.T) {
		all := "/admin/groups/" + testutil.Itoa(g3) + "/rpm-overrides"
		put(all, fmt.Sprintf(`{"entries":[{"user_id":%d,"rpm_override":1}]}`, u3))
		admExpect(t, c, k3, 429, "GROUP_RPM_EXCEEDED")
		put(all, `{"entries":[]}`)
		admExpect(t, c, k3, 200, "") // count 5
		put(all, fmt.Sprintf(`{"entries":[{"user_id":%d,"rpm_override":2}]}`, u3))
		admExpect(t, c, k3, 429, "GROUP_RPM_EXCEEDED")
		admWant(t, "clear all", c.admin(t, http.MethodDelete, all, ""), 200)
		admExpect(t, c, k3, 200, "") // count 6
	})
	t.Run("key status", func(t *testing.T) {
		admExpect(t, c, k3, 200, "")
		patch("/admin/keys/"+testutil.Itoa(kid3), `{"status":"disabled"}`)
		admExpect(t, c, k3, 401, "API_KEY_DISABLED")
		patch("/admin/keys/"+testutil.Itoa(kid3), `{"status":"active"}`)
		admExpect(t, c, k3, 200, "")
	})
}

// TestAdminAPIToken checks admin_token through Caddy: every JSON route
// needs it, a wrong one is refused and changes nothing, the page is served
// without it.
func TestAdminAPIToken(t *testing.T) {
	e := admSetup(t)
	uid := storetest.SeedUser(t, e.pool, 0)
	gid := storetest.SeedGroup(t, e.pool, "", 0)
	kid, key := storetest.SeedKey(t, e.pool, uid, &gid)
	storetest.SeedOverride(t, e.pool, uid, gid, 4)
	token := "tok-" + randomID()
	c := e.start(t, "admin_token "+token)
	u, g, k := testutil.Itoa(uid), testutil.Itoa(gid), testutil.Itoa(kid)

	routes := []struct{ method, path, body string }{
		{"GET", "/admin/users/" + u + "/rpm-status", ""},
		{"HEAD", "/admin/users/" + u + "/rpm-status", ""},
		{"GET", "/admin/groups/" + g + "/rpm-overrides", ""},
		{"PUT", "/admin/groups/" + g + "/rpm-overrides", `{"entries":[{"user_id":` + u + `,"rpm_override":4}]}`},
		{"PUT", "/admin/users/" + u + "/groups/" + g + "/rpm-override", `{"rpm_override":4}`},
		{"PATCH", "/admin/users/" + u, `{"rpm_limit":0}`},
		{"PATCH", "/admin/groups/" + g, `{"rpm_limit":0}`},
		{"PATCH", "/admin/keys/" + k, `{"status":"active"}`},
		{"DELETE", "/admin/auth-cache/keys/" + k, ""},
		{"DELETE", "/admin/auth-cache/users/" + u, ""},
		{"DELETE", "/admin/auth-cache/groups/" + g, ""},
		{"DELETE", "/admin/auth-cache", ""},
		{"DELETE", "/admin/groups/" + g + "/rpm-overrides", ""}, // last: it clears
	}
	bad := [][]string{
		nil,
		{"Authorization: Bearer wrong-" + token},
		{"Authorization: Bearer " + token + "x"},
		{"Authorization: Basic " + token},
		{"Authorization: " + token},
		{"Authorization: Bearer"},
	}
	for _, rt := range routes {
		for _, h := range bad {
			r := c.admin(t, rt.method, rt.path, rt.body, h...)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: status %d, want 401: %s", rt.method, rt.path, h, r.Status, r.Body)
			}
		}
	}
	for _, p := range []string{"/admin/nope", "/admin/users/abc/rpm-status"} {
		admWant(t, "GET "+p+" without token", c.admin(t, http.MethodGet, p, ""), 401)
	}
	if got := storetest.Overrides(t, e.pool, gid); got[uid] != 4 || len(got) != 1 {
		t.Fatalf("refused calls changed the overrides: %v", got)
	}

	good := "Authorization: Bearer " + token
	for _, rt := range routes {
		r := c.admin(t, rt.method, rt.path, rt.body, good)
		admWant(t, rt.method+" "+rt.path+" with the token", r, 200)
	}
	if got := storetest.Overrides(t, e.pool, gid); len(got) != 0 {
		t.Fatalf("clear all with the token left %v", got)
	}
	admExpect(t, c, key, 200, "")

	for _, p := range []string{"/admin/ui", "/admin/ui/app.js", "/admin/ui/style.css"} {
		r := c.admin(t, http.MethodGet, p, "")
		admWant(t, "GET "+p+" without token", r, 200)
		if r.Body == "" {
			t.Errorf("%s: empty body", p)
		}
	}
	if ct := c.admin(t, http.MethodGet, "/admin/ui", "").Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("/admin/ui content type %q", ct)
	}
}

// TestAdminAPIFlushAuthCache checks DELETE /admin/auth-cache with two
// instances: every L2 snapshot is gone from Redis and both instances load
// from the store again.
func TestAdminAPIFlushAuthCache(t *testing.T) {
	e := admSetup(t)
	ctx := context.Background()
	uid := storetest.SeedUser(t, e.pool, 0)
	keys := make([]string, 3)
	for i := range keys {
		_, keys[i] = storetest.SeedKey(t, e.pool, uid, nil)
	}
	c1, c2 := e.start(t, ""), e.start(t, "")
	snaps := func() []string {
		got, err := e.rdb.Keys(ctx, e.ns+"snap:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, c := range []*caddyInstance{c1, c2} {
		for _, k := range keys {
			admExpect(t, c, k, 200, "")
			admExpect(t, c, k, 200, "")
		}
	}
	if n := len(snaps()); n != 3 {
		t.Fatalf("%d L2 snapshots before the flush, want 3", n)
	}
	loads1 := c1.metric(t, "caddy_rpm_store_loads_total")
	loads2 := c2.metric(t, "caddy_rpm_store_loads_total")
	// Both warm: a request loads nothing.
	admExpect(t, c2, keys[0], 200, "")
	if l := c2.metric(t, "caddy_rpm_store_loads_total"); l != loads2 {
		t.Fatalf("instance 2 not warm: loads %v -> %v", loads2, l)
	}
	flushes2 := c2.metric(t, "caddy_rpm_invalidations_total", `scope="all"`, `origin="redis"`)

	r := c1.admin(t, http.MethodDelete, "/admin/auth-cache", "")
	admWant(t, "flush", r, 200)
	if left := snaps(); len(left) != 0 {
		t.Fatalf("L2 snapshots left after the flush: %v", left)
	}
	testutil.WaitFor(t, time.Second, func() error {
		if f := c2.metric(t, "caddy_rpm_invalidations_total", `scope="all"`, `origin="redis"`); f <= flushes2 {
			return fmt.Errorf("instance 2 got no flush yet")
		}
		return nil
	})
	admExpect(t, c2, keys[0], 200, "")
	if l := c2.metric(t, "caddy_rpm_store_loads_total"); l != loads2+1 {
		t.Fatalf("instance 2 store loads %v -> %v after the flush, want +1", loads2, l)
	}
	admExpect(t, c1, keys[1], 200, "")
	if l := c1.metric(t, "caddy_rpm_store_loads_total"); l != loads1+1 {
		t.Fatalf("instance 1 store loads %v -> %v after the flush, want +1", loads1, l)
	}
}
