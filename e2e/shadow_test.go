package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// shadowSite observes the limits on /shadow/* (the user's data limits and
// the zone "trial", 1 per key) and enforces them everywhere else; the
// upstream sees the would-be refusal code in X-Shadow-Refused.
const shadowSite = `handle /shadow/* {
		rpm {
			shadow
		}
		reverse_proxy {{.Upstream}} {
			header_up X-Shadow-Refused {http.rpm.shadow_refused}
		}
	}
	handle /trial/* {
		rpm {
			zone trial
			limit key 1
			shadow
		}
		reverse_proxy {{.Upstream}} {
			header_up X-Shadow-Refused {http.rpm.shadow_refused}
		}
	}
	handle {
		rpm
		reverse_proxy {{.Upstream}}
	}`

// shadowCaddy starts a Caddy with shadowSite and a user with the given
// limit and one key (its id and the raw key), at least 15 s before the
// window ends.
func shadowCaddy(t *testing.T, userLimit int64) (e *limEnv, c *caddyInstance, uid, kid int64, key string) {
	t.Helper()
	e = newLimEnv(t)
	c = e.caddy(t, "", exactGlobal, shadowSite)
	uid = storetest.SeedUser(t, e.pool, userLimit)
	kid, key = e.seedKey(t, uid, nil)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)
	return e, c, uid, kid, key
}

// TestShadowAdmitsPastTheLimit: a user limit of 2 in shadow mode admits 5
// requests and counts 3 shadow refusals; the upstream sees their code; the
// counters hold the 2 that enforcement would have admitted, so the
// enforcing route refuses at once; one log line per user and window.
func TestShadowAdmitsPastTheLimit(t *testing.T) {
	e, c, uid, _, key := shadowCaddy(t, 2)

	for i, r := range limExpect(t, c, "/shadow/x", key, limRepeat(http.StatusOK, 5), "") {
		if r.Header.Get("Retry-After") != "" {
			t.Errorf("request %d: a shadow-admitted answer carries Retry-After", i+1)
		}
	}
	var seen []string
	for _, h := range e.up.headers() {
		seen = append(seen, h.Get("X-Shadow-Refused"))
	}
	if want := []string{"", "", "USER_RPM_EXCEEDED", "USER_RPM_EXCEEDED", "USER_RPM_EXCEEDED"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("upstream saw X-Shadow-Refused %q, want %q", seen, want)
	}
	if n := c.metric(t, "caddy_rpm_shadow_refusals_total", `reason="USER_RPM_EXCEEDED"`); n != 3 {
		t.Errorf("shadow_refusals_total{reason=USER_RPM_EXCEEDED} = %v, want 3", n)
	}
	if n := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="shadow"`); n != 3 {
		t.Errorf("decisions_total{admitted,shadow} = %v, want 3", n)
	}
	// Shadow refusals are counted in no limit: the counter holds what
	// enforcement would have admitted.
	e.wantCount(t, "user", e.keys.User(uid), 2)
	limExpect(t, c, "/v1/x", key, []int{http.StatusTooManyRequests}, "USER_RPM_EXCEEDED")

	if n := strings.Count(c.Logs(), "shadow mode admitted a request a limit would refuse"); n != 1 {
		t.Errorf("%d shadow log lines for 3 shadow refusals of one user in one window, want 1", n)
	}
}

// TestShadowRouteLimitAndAuth: a route limit in shadow mode admits past it
// with its own code, and authentication is never shadowed.
func TestShadowRouteLimitAndAuth(t *testing.T) {
	e, c, uid, kid, key := shadowCaddy(t, 100)

	limExpect(t, c, "/trial/x", key, limRepeat(http.StatusOK, 3), "")
	if n := c.metric(t, "caddy_rpm_shadow_refusals_total", `reason="ROUTE_RPM_EXCEEDED"`); n != 2 {
		t.Errorf("shadow_refusals_total{reason=ROUTE_RPM_EXCEEDED} = %v, want 2", n)
	}
	hs := e.up.headers()
	if got := hs[len(hs)-1].Get("X-Shadow-Refused"); got != "ROUTE_RPM_EXCEEDED" {
		t.Errorf("upstream saw X-Shadow-Refused %q, want ROUTE_RPM_EXCEEDED", got)
	}
	e.wantCount(t, "zone trial", e.keys.ZoneKey("trial", uid, kid), 1)
	e.wantCount(t, "user", e.keys.User(uid), 1)

	if r := c.get(t, "/shadow/x", "sk-not-a-key-of-this-store"); r.Status != http.StatusUnauthorized || r.code() != "INVALID_API_KEY" {
		t.Errorf("unknown key on a shadow route: %d %q, want 401 INVALID_API_KEY", r.Status, r.code())
	}
	if _, err := e.pool.Exec(t.Context(), `UPDATE rpm_users SET status = 'disabled' WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if r := c.get(t, "/shadow/x", key); r.Status != http.StatusForbidden || r.code() != "USER_DISABLED" {
			return fmt.Errorf("disabled user on a shadow route: %d %q, want 403 USER_DISABLED", r.Status, r.code())
		}
		return nil
	})
}
