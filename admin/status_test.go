package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// rpmStatus and groupStatus are the answer types of rpm-status.
type (
	rpmStatus   = gateway.Status
	groupStatus = gateway.GroupStatus
)

// scenario seeds the rpm-status acceptance case: a user (rpm_limit 20)
// with keys in groups 2, 1, 2 and one key without a group; group 1
// "group-one" has rpm_limit 10, group 2 "group-two" has rpm_limit 50 and
// an override of 7 for the user. It returns the user and group ids.
func scenario(t *testing.T, pool *pgxpool.Pool) (uid, g1, g2 int64) {
	t.Helper()
	g1 = storetest.SeedGroup(t, pool, "group-one", 10)
	g2 = storetest.SeedGroup(t, pool, "group-two", 50)
	uid = storetest.SeedUser(t, pool, 20)
	storetest.SeedKey(t, pool, uid, &g2)
	storetest.SeedKey(t, pool, uid, &g1)
	storetest.SeedKey(t, pool, uid, &g2)
	storetest.SeedKey(t, pool, uid, nil)
	storetest.SeedOverride(t, pool, uid, g2, 7)
	// Another user's override in group 2 must not show up.
	other := storetest.SeedUser(t, pool, 0)
	storetest.SeedOverride(t, pool, other, g2, 3)
	return uid, g1, g2
}

// spend admits n requests of the user in the group through the counters the
// handler uses: the user counter and the (user, group) counter.
func spend(t *testing.T, b *testBackend, uid, gid, groupLimit int64, n int) {
	t.Helper()
	counters := []limiter.Counter{
		{Key: b.keys.User(uid), Limit: 20, UserID: uid},
		{Key: b.keys.UserGroup(uid, gid), Limit: groupLimit, UserID: uid, GroupID: gid},
	}
	for i := 0; i < n; i++ {
		res, err := b.lim.Check(context.Background(), counters)
		if err != nil || !res.Allowed {
			t.Fatalf("check %d: %+v, %v", i, res, err)
		}
	}
}

// getStatus calls rpm-status and decodes the answer.
func getStatus(t *testing.T, h http.Handler, uid int64) rpmStatus {
	t.Helper()
	res := call(t, h, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
	expect(t, res, http.StatusOK, "rpm-status")
	var st rpmStatus
	if err := json.Unmarshal([]byte(res.Raw), &st); err != nil {
		t.Fatalf("decode %s: %v", res.Raw, err)
	}
	for _, f := range []string{"user_id", "user_rpm_used", "user_rpm_limit", "per_group", "per_zone", "window_resets_in", "window_resets_at"} {
		if _, ok := res.JSON[f]; !ok {
			t.Errorf("rpm-status lacks %q: %s", f, res.Raw)
		}
	}
	return st
}

// checkAcceptance asserts the acceptance answer.
func checkAcceptance(t *testing.T, st rpmStatus, uid, g1, g2 int64) {
	t.Helper()
	if st.UserID != uid || st.UserRPMUsed != 5 || st.UserRPMLimit != 20 {
		t.Errorf("user fields = %d/%d/%d, want %d/5/20", st.UserID, st.UserRPMUsed, st.UserRPMLimit, uid)
	}
	want := []groupStatus{
		{GroupID: g1, GroupName: "group-one", Used: 3, Limit: 10, Source: "group"},
		{GroupID: g2, GroupName: "group-two", Used: 2, Limit: 7, Source: "override"},
	}
	if !reflect.DeepEqual(st.PerGroup, want) {
		t.Errorf("per_group = %+v, want %+v", st.PerGroup, want)
	}
	if st.WindowResetsIn < 1 || st.WindowResetsIn > 60 {
		t.Errorf("window_resets_in = %d, want 1..60", st.WindowResetsIn)
	}
	d := time.Until(st.WindowResetsAt)
	if d < -2*time.Second || d > 61*time.Second || st.WindowResetsAt.Location() != time.UTC {
		t.Errorf("window_resets_at = %v, want UTC within the next minute", st.WindowResetsAt)
	}
}

func TestRPMStatusAcceptance(t *testing.T) {
	b, pool := newPGBackend(t)
	uid, g1, g2 := scenario(t, pool)
	if g1 != 1 || g2 != 2 {
		t.Logf("group ids are %d and %d", g1, g2)
	}
	spend(t, b, uid, g1, 10, 3)
	spend(t, b, uid, g2, 7, 2)
	h := b.handler()

	st := getStatus(t, h, uid)
	checkAcceptance(t, st, uid, g1, g2)
	if st.WindowResetsIn != 40 {
		t.Errorf("window_resets_in = %d, want 40 on the fixed clock", st.WindowResetsIn)
	}
	if len(st.PerZone) != 0 {
		t.Errorf("per_zone = %+v, want empty", st.PerZone)
	}
	// Reading the status increments nothing.
	if st2 := getStatus(t, h, uid); !reflect.DeepEqual(st2.PerGroup, st.PerGroup) || st2.UserRPMUsed != 5 {
		t.Errorf("second read = %+v, want the same as the first", st2)
	}
}

func TestRPMStatusFreshLimits(t *testing.T) {
	b, pool := newPGBackend(t)
	uid, g1, g2 := scenario(t, pool)
	h := b.handler()
	// A change made directly in SQL shows on the next read.
	if _, err := pool.Exec(context.Background(), `update rpm_groups set rpm_limit = 0 where id = $1`, g1); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `delete from rpm_user_group_overrides where group_id = $1 and user_id = $2`, g2, uid); err != nil {
		t.Fatal(err)
	}
	st := getStatus(t, h, uid)
	want := []groupStatus{
		{GroupID: g1, GroupName: "group-one", Limit: 0, Source: "group"},
		{GroupID: g2, GroupName: "group-two", Limit: 50, Source: "group"},
	}
	if !reflect.DeepEqual(st.PerGroup, want) {
		t.Errorf("per_group = %+v, want %+v", st.PerGroup, want)
	}
}

func TestRPMStatusZones(t *testing.T) {
	b, pool := newPGBackend(t)
	uid := storetest.SeedUser(t, pool, 0)
	b.zones = []gateway.RouteLimit{{Zone: "expensive", Scope: gateway.LimitRouteUser, Limit: 5}, {Zone: "per-key", Scope: gateway.LimitRouteKey, Limit: 2}}
	for i := 0; i < 4; i++ {
		if _, err := b.lim.Check(context.Background(), []limiter.Counter{{Key: b.keys.ZoneUser("expensive", uid), Limit: 5}}); err != nil {
			t.Fatal(err)
		}
	}
	st := getStatus(t, b.handler(), uid)
	if len(st.PerGroup) != 0 || st.UserRPMUsed != 0 {
		t.Errorf("groups/used = %+v/%d, want none/0", st.PerGroup, st.UserRPMUsed)
	}
	if len(st.PerZone) != 2 {
		t.Fatalf("per_zone = %+v, want 2 zones", st.PerZone)
	}
	if z := st.PerZone[0]; z.Name != "expensive" || z.Scope != "user" || z.Limit != 5 || z.Used == nil || *z.Used != 4 {
		t.Errorf("user zone = %+v, want expensive/user/5 used 4", z)
	}
	if z := st.PerZone[1]; z.Name != "per-key" || z.Scope != "key" || z.Limit != 2 || z.Used != nil {
		t.Errorf("key zone = %+v, want per-key/key/2 without used", z)
	}
}

func TestRPMStatusErrors(t *testing.T) {
	b, _ := newPGBackend(t)
	h := b.handler()
	expect(t, call(t, h, http.MethodGet, "/admin/users/999999/rpm-status", ""), http.StatusNotFound, "unknown user")
	for _, id := range []string{"abc", "0", "-1", "+1", "1.5", "99999999999999999999"} {
		expect(t, call(t, h, http.MethodGet, "/admin/users/"+id+"/rpm-status", ""), http.StatusBadRequest, "id "+id)
	}
}

// TestRPMStatusRedis runs the acceptance scenario on the Redis limiter,
// whose windows follow the Redis clock.
func TestRPMStatusRedis(t *testing.T) {
	client, prefix := redistest.Shared(t)
	redistest.WaitForWindow(t, client, 15*time.Second)

	b, pool := newPGBackend(t)
	b.lim = limiter.NewRedis(client)
	b.keys = limiter.Keys{Prefix: prefix}
	uid, g1, g2 := scenario(t, pool)
	spend(t, b, uid, g1, 10, 3)
	spend(t, b, uid, g2, 7, 2)
	checkAcceptance(t, getStatus(t, b.handler(), uid), uid, g1, g2)
}
