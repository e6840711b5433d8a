package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestSmoke runs the whole chain once: Postgres store, Redis cache and
// counters, a limit hit, and the admin API.
func TestSmoke(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 2)
	gid := storetest.SeedGroup(t, pool, "smoke", 0)
	_, key := storetest.SeedKey(t, pool, uid, &gid)
	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL})
	redistest.WaitForWindow(t, rdb, 10e9)

	for i, want := range []int{200, 200, 429} {
		r := c.get(t, "/v1/models", key)
		if r.Status != want {
			t.Fatalf("request %d: status %d, want %d: %s", i+1, r.Status, want, r.Body)
		}
		if want == 429 && !strings.Contains(r.Body, "USER_RPM_EXCEEDED") {
			t.Fatalf("429 body: %s", r.Body)
		}
	}
	st := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
	if st.Status != 200 || !strings.Contains(st.Body, `"user_rpm_used":2`) {
		t.Fatalf("rpm-status: %d %s", st.Status, st.Body)
	}
	if h := up.headers(); len(h) != 2 || h[0].Get("Authorization") != "" {
		t.Fatalf("upstream saw %d requests, first Authorization %q", len(h), h[0].Get("Authorization"))
	}
}
