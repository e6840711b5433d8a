package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// routeSite caps /img/* (zone img, with the imgLimits lines) and /txt/*
// (zone txt) tighter than the rest of the API.
func routeSite(imgLimits string) string {
	return `handle /img/* {
		rpm {
			zone img
			` + imgLimits + `
		}
		reverse_proxy {{.Upstream}}
	}
	handle /txt/* {
		rpm {
			zone txt
			limit user 4
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		rpm
		reverse_proxy {{.Upstream}}
	}`
}

func routeCaddy(t testing.TB, e *limEnv, imgLimits string) *caddyInstance {
	t.Helper()
	// A generous redis_timeout: see exactGlobal.
	return e.caddy(t, "", exactGlobal, routeSite(imgLimits))
}

// TestRouteLimitUser: `limit user 3` in zone img with a user limit of 100.
func TestRouteLimitUser(t *testing.T) {
	e := newLimEnv(t)
	c := routeCaddy(t, e, "limit user 3")
	uid, _, key := e.seedGroupedKey(t, 100, 0, noOverride)
	zone := e.keys.ZoneUser("img", uid)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)

	limExpect(t, c, "/img/x", key, limRepeat(200, 3), "")
	e.wantCount(t, "zone img", zone, 3)
	e.wantCount(t, "user", e.keys.User(uid), 3)

	rs := limExpect(t, c, "/img/x", key, []int{429}, "ROUTE_RPM_EXCEEDED")
	left := hdrLeft(t, e)
	r := rs[0]
	hdrReset(t, r, "Retry-After", left)
	hdrCheck(t, r, hdrWant{
		limits: map[string]int64{"user": 100, "img": 3},
		counts: map[string]int64{"user": 3, "img": 3},
		order:  []string{"user", "img"}, strictest: "img",
	}, left)
	var body struct{ Error struct{ Message string } }
	_ = json.Unmarshal([]byte(r.Body), &body)
	if !strings.Contains(body.Error.Message, `"img"`) || !strings.Contains(body.Error.Message, "3 requests per minute") {
		t.Errorf("429 message does not name the route limit: %q", body.Error.Message)
	}
	// The refused request incremented nothing.
	e.wantCount(t, "zone img", zone, 3)
	e.wantCount(t, "user", e.keys.User(uid), 3)

	// Other paths still pass, and still count toward the user limit
	// (and not toward the zone).
	limExpect(t, c, "/v1/chat", key, limRepeat(200, 5), "")
	e.wantCount(t, "user", e.keys.User(uid), 8)
	e.wantCount(t, "zone img", zone, 3)
	// A second zone on another route is independent.
	limExpect(t, c, "/txt/x", key, limSeq(limRepeat(200, 4), []int{429}), "ROUTE_RPM_EXCEEDED")
	e.wantCount(t, "zone txt", e.keys.ZoneUser("txt", uid), 4)
	e.wantCount(t, "user", e.keys.User(uid), 12)
	limExpect(t, c, "/img/x", key, []int{429}, "ROUTE_RPM_EXCEEDED")

	// rpm-status lists the zones this instance configured.
	st := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
	if st.Status != 200 {
		t.Fatalf("rpm-status: %d %s", st.Status, st.Body)
	}
	var status struct {
		UserRPMUsed int64 `json:"user_rpm_used"`
		PerZone     []struct {
			Name  string `json:"name"`
			Scope string `json:"scope"`
			Used  *int64 `json:"used"`
			Limit int64  `json:"limit"`
		} `json:"per_zone"`
	}
	if err := json.Unmarshal([]byte(st.Body), &status); err != nil {
		t.Fatal(err)
	}
	if status.UserRPMUsed != 12 || len(status.PerZone) != 2 {
		t.Fatalf("rpm-status: %s", st.Body)
	}
	for i, want := range []struct {
		name        string
		used, limit int64
	}{{"img", 3, 3}, {"txt", 4, 4}} {
		z := status.PerZone[i]
		if z.Name != want.name || z.Scope != "user" || z.Limit != want.limit || z.Used == nil || *z.Used != want.used {
			t.Errorf("per_zone[%d] = %+v, want %+v", i, z, want)
		}
	}
}

// TestRouteStrictestWins: user limit 2, route limit 5 → the third request
// is USER_RPM_EXCEEDED.
func TestRouteStrictestWins(t *testing.T) {
	e := newLimEnv(t)
	c := routeCaddy(t, e, "limit user 5")
	uid := storetest.SeedUser(t, e.pool, 2)
	_, key := e.seedKey(t, uid, nil)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)
	limExpect(t, c, "/img/x", key, []int{200, 200, 429}, "USER_RPM_EXCEEDED")
	e.wantCount(t, "zone img", e.keys.ZoneUser("img", uid), 2)
	e.wantCount(t, "user", e.keys.User(uid), 2)
}

// TestRouteLimitKey: `limit key 2` gives each key of a user its own 2.
func TestRouteLimitKey(t *testing.T) {
	e := newLimEnv(t)
	c := routeCaddy(t, e, "limit key 2")
	uid := storetest.SeedUser(t, e.pool, 100)
	k1id, k1 := e.seedKey(t, uid, nil)
	k2id, k2 := e.seedKey(t, uid, nil)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)
	limExpect(t, c, "/img/x", k1, []int{200, 200, 429}, "ROUTE_RPM_EXCEEDED")
	limExpect(t, c, "/img/x", k2, []int{200, 200, 429}, "ROUTE_RPM_EXCEEDED")
	e.wantCount(t, "zone img key 1", e.keys.ZoneKey("img", uid, k1id), 2)
	e.wantCount(t, "zone img key 2", e.keys.ZoneKey("img", uid, k2id), 2)
	e.wantCount(t, "user", e.keys.User(uid), 4)
	e.wantNoKey(t, "zone img per user", e.keys.ZoneUser("img", uid))
}

// TestRouteZoneShared: two Caddy instances with the same zone share it
// exactly under concurrency; the other zone is untouched and independent.
func TestRouteZoneShared(t *testing.T) {
	e := newLimEnv(t)
	c1 := routeCaddy(t, e, "limit user 23")
	c2 := routeCaddy(t, e, "limit user 23")
	uid := storetest.SeedUser(t, e.pool, 1000)
	_, key := e.seedKey(t, uid, nil)
	redistest.WaitForWindow(t, e.rdb, 25*time.Second)
	st := limBurst(t, []string{c1.URL + "/img/x", c2.URL + "/img/x"}, key, 20, 10)
	if st[200] != 23 || st[429] != 200-23 {
		t.Fatalf("statuses %v, want 23×200", st)
	}
	e.wantCount(t, "zone img", e.keys.ZoneUser("img", uid), 23)
	e.wantCount(t, "user", e.keys.User(uid), 23)
	e.wantNoKey(t, "zone txt", e.keys.ZoneUser("txt", uid))
	st = limBurst(t, []string{c1.URL + "/txt/x", c2.URL + "/txt/x"}, key, 10, 2)
	if st[200] != 4 || st[429] != 16 {
		t.Fatalf("zone txt statuses %v, want 4×200", st)
	}
	e.wantCount(t, "user", e.keys.User(uid), 27)
}

// TestRouteConfigErrors: bad route limits are config errors naming the
// line, from `caddy adapt` of the real binary.
func TestRouteConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct{ block, want string }{
		"no_zone":         {"limit user 3", "needs a 'zone'"},
		"zero":            {"zone img\nlimit user 0", "at least 1"},
		"negative":        {"zone img\nlimit key -2", "at least 1"},
		"unknown_scope":   {"zone img\nlimit group 3", "must be user or key"},
		"duplicate_scope": {"zone img\nlimit user 3\nlimit user 4", "duplicate limit"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := writeCaddyfile(t, t.TempDir(), params{KeysFile: "keys.json", Redis: "off", RPM: tc.block})
			out, err := runCaddyCommand(t, "adapt", "--config", cfg)
			if err == nil {
				t.Fatalf("caddy adapt accepted the route limits %q:\n%s", tc.block, out)
			}
			if !strings.Contains(out, tc.want) || !strings.Contains(out, "Caddyfile:") {
				t.Fatalf("caddy adapt error does not name the problem and line:\n%s", out)
			}
		})
	}
}
