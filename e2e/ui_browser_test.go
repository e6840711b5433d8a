package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/browsertest"
	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// uibStatus is the JSON of GET /admin/users/{id}/rpm-status.
type uibStatus struct {
	UserID         int64 `json:"user_id"`
	UserRPMUsed    int64 `json:"user_rpm_used"`
	UserRPMLimit   int64 `json:"user_rpm_limit"`
	WindowResetsIn int64 `json:"window_resets_in"`
	PerGroup       []struct {
		GroupID   int64  `json:"group_id"`
		GroupName string `json:"group_name"`
		Used      int64  `json:"used"`
		Limit     int64  `json:"limit"`
		Source    string `json:"source"`
	} `json:"per_group"`
	PerZone []json.RawMessage `json:"per_zone"`
}

func uibGetStatus(t *testing.T, c *caddyInstance, uid int64, headers ...string) uibStatus {
	t.Helper()
	r := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "", headers...)
	if r.Status != http.StatusOK {
		t.Fatalf("rpm-status of user %d: %d %s", uid, r.Status, r.Body)
	}
	var st uibStatus
	if err := json.Unmarshal([]byte(r.Body), &st); err != nil {
		t.Fatalf("rpm-status: %v: %s", err, r.Body)
	}
	return st
}

// uibLimitText is how the page shows a limit (0 = unlimited).
func uibLimitText(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	return testutil.Itoa(n)
}

// TestUIBrowserAdminPage drives the admin web page in headless Chromium
// against a real Caddy on real Postgres and Redis: a status lookup matches
// the JSON API, edited overrides are stored and enforced, Clear all sends
// one DELETE and shows its loading state, a read-only keys_file store's 409
// is readable, and an admin token is asked for once.
func TestUIBrowserAdminPage(t *testing.T) {
	browsertest.RequireChromium(t)

	pool, dsn := storetest.NewSchema(t)
	countDeletes := storetest.CountOverrideDeletes(t, pool)
	userA := storetest.SeedUser(t, pool, 100)
	userB := storetest.SeedUser(t, pool, 100)
	g1 := storetest.SeedGroup(t, pool, "uib-alpha-"+randomID(), 50)
	g2 := storetest.SeedGroup(t, pool, "uib-beta-"+randomID(), 40)
	_, keyA1 := storetest.SeedKey(t, pool, userA, &g1)
	_, keyA2 := storetest.SeedKey(t, pool, userA, &g2)
	_, keyB1 := storetest.SeedKey(t, pool, userB, &g1)
	storetest.SeedOverride(t, pool, userA, g1, 25)
	storetest.SeedOverride(t, pool, userB, g1, 20)
	storetest.SeedOverride(t, pool, userA, g2, 30)

	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL})

	b := brwNew(t)
	brwOpen(b, c)
	b.Shot("page-loaded")

	t.Run("lookup matches rpm-status", func(t *testing.T) {
		b.SetT(t)
		redistest.WaitForWindow(t, rdb, 20*time.Second)
		for _, k := range []struct {
			key string
			n   int
		}{{keyA1, 3}, {keyA2, 2}, {keyB1, 1}} {
			for i := 0; i < k.n; i++ {
				if r := c.get(t, "/v1/models", k.key); r.Status != http.StatusOK {
					t.Fatalf("traffic: status %d: %s", r.Status, r.Body)
				}
			}
		}
		st := uibGetStatus(t, c, userA)
		if st.UserRPMUsed != 5 || len(st.PerGroup) != 2 || st.PerGroup[0].Used != 3 || st.PerGroup[1].Used != 2 {
			t.Fatalf("rpm-status after traffic: %+v, want 5 used, 3 in group %d and 2 in group %d", st, g1, g2)
		}

		b.TypeInto("#user-id", testutil.Itoa(userA))
		b.Click("#lookup")
		b.WaitJS(`!document.getElementById('user-status').hidden &&
			document.querySelectorAll('#per-group tr[data-group-id]').length === 2`)
		b.Shot("lookup")

		// Every number on the page against the JSON the test fetched.
		b.ExpectText("#user-used", testutil.Itoa(st.UserRPMUsed))
		b.ExpectText("#user-limit", uibLimitText(st.UserRPMLimit))
		var rows []string
		b.Eval(`[...document.querySelectorAll('#per-group tr[data-group-id]')].map(r => r.dataset.groupId)`, &rows)
		var want []string
		for _, g := range st.PerGroup {
			want = append(want, testutil.Itoa(g.GroupID))
			row := fmt.Sprintf(`#per-group tr[data-group-id="%d"]`, g.GroupID)
			b.ExpectText(row+" td:nth-child(1)", testutil.Itoa(g.GroupID))
			b.ExpectText(row+" td:nth-child(2)", g.GroupName)
			b.ExpectText(row+" td.used", testutil.Itoa(g.Used))
			b.ExpectText(row+" td.limit", uibLimitText(g.Limit))
			b.ExpectText(row+" td.source", g.Source)
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("page group rows %v, want %v (rpm-status order)", rows, want)
		}
		// The override of A in g1 (25) and in g2 (30) are what both show.
		if st.PerGroup[0].Limit != 25 || st.PerGroup[0].Source != "override" || st.PerGroup[1].Limit != 30 {
			t.Errorf("rpm-status groups %+v, want overrides 25 and 30", st.PerGroup)
		}
		if len(st.PerZone) == 0 {
			var zonesHidden bool
			b.Eval(`document.getElementById('per-zone').hidden`, &zonesHidden)
			if !zonesHidden {
				t.Errorf("per-zone table shown for a user without zones")
			}
		}
		cd, err := strconv.Atoi(strings.TrimSuffix(b.Text("#countdown"), " s"))
		if err != nil {
			t.Fatalf("countdown %q: %v", b.Text("#countdown"), err)
		}
		if int64(cd) > st.WindowResetsIn+1 || int64(cd) < st.WindowResetsIn-5 {
			t.Errorf("countdown %d s, rpm-status window_resets_in %d s", cd, st.WindowResetsIn)
		}
	})

	t.Run("edit two overrides and save", func(t *testing.T) {
		b.SetT(t)
		b.OpenGroup(testutil.Itoa(g1), `document.getElementById('group-label').textContent === '`+testutil.Itoa(g1)+`' &&
			document.querySelectorAll('#overrides tr').length === 2`)
		b.Shot("group-opened")

		rowA := fmt.Sprintf(`#overrides tr[data-user-id="%d"] input.override-value`, userA)
		rowB := fmt.Sprintf(`#overrides tr[data-user-id="%d"] input.override-value`, userB)
		b.TypeInto(rowA, "10")
		b.TypeInto(rowB, "2")
		b.Shot("overrides-edited")
		b.Click("#save")
		b.WaitJS(`document.getElementById('message').textContent.includes('Saved 2 overrides')`)
		b.Shot("overrides-saved")

		if got, want := storetest.Overrides(t, pool, g1), map[int64]int64{userA: 10, userB: 2}; !reflect.DeepEqual(got, want) {
			t.Fatalf("overrides of group %d in the database: %v, want %v", g1, got, want)
		}

		// B had 20 in g1 and a cached snapshot from the lookup traffic; now
		// 2 holds from the next request on.
		redistest.WaitForWindow(t, rdb, 15*time.Second)
		used := int64(0)
		for _, g := range uibGetStatus(t, c, userB).PerGroup {
			if g.GroupID == g1 {
				used = g.Used
				if g.Limit != 2 || g.Source != "override" {
					t.Errorf("rpm-status of B in group %d: limit %d (%s), want override 2", g1, g.Limit, g.Source)
				}
			}
		}
		for i := used; i < 2; i++ {
			if r := c.get(t, "/v1/models", keyB1); r.Status != http.StatusOK {
				t.Fatalf("request %d of B in this minute: status %d, want 200: %s", i+1, r.Status, r.Body)
			}
		}
		r := c.get(t, "/v1/models", keyB1)
		if r.Status != http.StatusTooManyRequests || !strings.Contains(r.Body, "GROUP_RPM_EXCEEDED") {
			t.Fatalf("request 3 of B in this minute: status %d, want 429 GROUP_RPM_EXCEEDED: %s", r.Status, r.Body)
		}
	})

	t.Run("clear all double click", func(t *testing.T) {
		b.SetT(t)
		uri := "/admin/groups/" + testutil.Itoa(g1) + "/rpm-overrides"
		deletesBefore := countDeletes()
		httpBefore := uibMethods(brwAdminRequests(t, c, uri), http.MethodDelete)

		// A test transaction locks the overrides table, so the DELETE stays
		// in flight (its statement waits) until the test lets it go.
		hold := storetest.HoldLock(t, pool, `lock table rpm_user_group_overrides in share row exclusive mode`)

		b.DoubleClick("#clear-all")
		// Read the state while the DELETE is in flight.
		b.ExpectClearing()
		b.Shot("clearing-in-flight")
		// Still in flight half a second later: the button stays disabled and a
		// third click does nothing.
		b.ExpectClearAllIgnored()
		if got := storetest.Overrides(t, pool, g1); len(got) != 2 {
			t.Errorf("overrides %v already gone while the DELETE should still be held by the lock", got)
		}
		hold.Release()

		b.ExpectCleared(2)
		b.ExpectVisible("#overrides-empty")
		b.Shot("cleared")

		if got := storetest.Overrides(t, pool, g1); len(got) != 0 {
			t.Errorf("overrides of group %d in the database after clear: %v, want none", g1, got)
		}
		if n := uibMethods(brwAdminRequests(t, c, uri), http.MethodDelete) - httpBefore; n != 1 {
			t.Errorf("Caddy's admin endpoint received %d DELETE %s for a double click, want exactly 1", n, uri)
		}
		if n := countDeletes() - deletesBefore; n != 1 {
			t.Errorf("%d DELETE statements ran on the overrides table, want exactly 1", n)
		}
		// The status panel's refresh (every 3 s) shows A's limit in g1 fall
		// back to the group's 50.
		row := fmt.Sprintf(`#per-group tr[data-group-id="%d"]`, g1)
		b.WaitJS(`document.querySelector('` + row + ` td.limit').textContent === '50' &&
			document.querySelector('` + row + ` td.source').textContent === 'group'`)
		b.Shot("status-refreshed")
		// g2 is untouched.
		if got := storetest.Overrides(t, pool, g2); !reflect.DeepEqual(got, map[int64]int64{userA: 30}) {
			t.Errorf("overrides of group %d: %v, want only A's 30", g2, got)
		}
	})

	t.Run("keys_file store answers 409", func(t *testing.T) {
		b.SetT(t)
		kf := uibKeysFileCaddy(t, prefix, up.URL)
		brwOpen(b, kf)
		b.OpenGroup("1", `document.getElementById('group-label').textContent === '1' &&
			document.querySelectorAll('#overrides tr').length === 1`)
		b.Click("#save")
		b.WaitJS(`!document.getElementById('message').hidden && document.getElementById('message').textContent.includes('read-only')`)
		msg := b.Text("#message")
		if !strings.HasPrefix(msg, "Cannot change data: the keys_file store is read-only") || !strings.Contains(msg, "Edit the keys file and reload Caddy") {
			t.Errorf("409 on Save shown as %q", msg)
		}
		b.ExpectVisible("#message")
		b.Shot("keys-file-save-409")

		// The 409 comes at once (the loading state was checked above): drop
		// the Save's message first, so the one waited for is the clear's.
		var none any
		b.Eval(`document.getElementById('message').textContent = ''`, &none)
		b.Click("#clear-all")
		b.WaitJS(`!document.getElementById('clear-all').disabled && document.getElementById('message').textContent.includes('read-only')`)
		if msg := b.Text("#message"); !strings.HasPrefix(msg, "Cannot change data: ") {
			t.Errorf("409 on Clear all shown as %q", msg)
		}
		var rows int
		b.Eval(`document.querySelectorAll('#overrides tr').length`, &rows)
		if rows != 1 {
			t.Errorf("%d rows after a refused clear, want the 1 override still listed", rows)
		}
		b.Shot("keys-file-clear-409")
	})

	t.Run("admin token asked once", func(t *testing.T) {
		b.SetT(t)
		token := "uib-" + randomID() + randomID()
		tc := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL, Global: "admin_token " + token})
		if r := tc.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(userA)+"/rpm-status", ""); r.Status != http.StatusUnauthorized {
			t.Fatalf("rpm-status without token: %d, want 401", r.Status)
		}
		brwOpen(b, tc)
		b.TypeInto("#user-id", testutil.Itoa(userA))
		b.Click("#lookup")
		b.WaitJS(`!document.getElementById('token-box').hidden`)
		b.ExpectText("#message", "Admin token required or wrong. Enter the admin token above.")
		b.Shot("token-prompt")

		b.TypeInto("#token", token)
		b.Click("#token-save")
		b.WaitJS(`document.getElementById('token-box').hidden &&
			document.querySelectorAll('#per-group tr[data-group-id]').length === 2`)
		st := uibGetStatus(t, tc, userA, "Authorization: Bearer "+token)
		b.ExpectText("#user-used", testutil.Itoa(st.UserRPMUsed))
		b.Shot("token-lookup")

		// A write works too, with no second prompt.
		b.OpenGroup(testutil.Itoa(g2), `document.getElementById('group-label').textContent === '`+testutil.Itoa(g2)+`' &&
			document.querySelectorAll('#overrides tr').length === 1`)
		b.TypeInto(fmt.Sprintf(`#overrides tr[data-user-id="%d"] input.override-value`, userA), "35")
		b.Click("#save")
		b.WaitJS(`document.getElementById('message').textContent.includes('Saved 1 override')`)
		b.Shot("token-saved")
		var prompt bool
		b.Eval(`document.getElementById('token-box').hidden`, &prompt)
		if !prompt {
			t.Errorf("token box shown again after the token was given")
		}
		if got := storetest.Overrides(t, pool, g2); !reflect.DeepEqual(got, map[int64]int64{userA: 35}) {
			t.Errorf("overrides of group %d after the save with a token: %v, want A: 35", g2, got)
		}

		// What reached Caddy: one API call without a token (the 401 that
		// brought up the prompt), every later one with it.
		reqs := brwAdminRequests(t, tc, "/admin/")
		var api []brwAdminRequest
		for _, r := range reqs {
			if !strings.HasPrefix(r.URI, "/admin/ui") {
				api = append(api, r)
			}
		}
		// The first logged call is the test's own check without a token.
		if len(api) < 5 {
			t.Fatalf("admin log holds %d API calls, want the test's 2 and at least 3 from the page", len(api))
		}
		without := 0
		for _, r := range api[1:] {
			if len(r.Headers["Authorization"]) == 0 {
				without++
			}
		}
		if without != 1 {
			t.Errorf("%d page API calls without Authorization, want 1 (the token is asked once)", without)
		}
	})

	b.SetT(t)
	b.ExpectNoPageErrors()
}

// uibMethods counts the requests with the given method.
func uibMethods(reqs []brwAdminRequest, method string) int {
	n := 0
	for _, r := range reqs {
		if r.Method == method {
			n++
		}
	}
	return n
}

// uibKeysFileCaddy starts a Caddy on a read-only keys file with user 1,
// group 1 and one override.
func uibKeysFileCaddy(t *testing.T, prefix, upstream string) *caddyInstance {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	doc := `{
	"users": [{"id": 1, "username": "file-user", "status": "active", "rpm_limit": 10}],
	"groups": [{"id": 1, "name": "file-group", "status": "active", "rpm_limit": 5}],
	"api_keys": [{"id": 1, "key": "sk-uib-` + randomID() + `", "user_id": 1, "group_id": 1, "status": "active"}],
	"rpm_overrides": [{"user_id": 1, "group_id": 1, "rpm_override": 3}]
}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return startCaddy(t, params{KeysFile: path, Prefix: prefix, Upstream: upstream})
}
