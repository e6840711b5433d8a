package admin

import (
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func TestGroupOverridesList(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	u1, u2 := storetest.SeedUser(t, pool, 0), storetest.SeedUser(t, pool, 0)
	storetest.SeedOverride(t, pool, u2, g, 0)
	storetest.SeedOverride(t, pool, u1, g, 5)
	h := b.handler()

	res := call(t, h, http.MethodGet, "/admin/groups/"+testutil.Itoa(g)+"/rpm-overrides", "")
	expect(t, res, http.StatusOK, "list")
	want := `{"group_id":` + testutil.Itoa(g) + `,"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":5},{"user_id":` + testutil.Itoa(u2) + `,"rpm_override":0}]}` + "\n"
	if res.Raw != want {
		t.Errorf("list = %s, want %s", res.Raw, want)
	}

	empty := storetest.SeedGroup(t, pool, "empty", 0)
	res = call(t, h, http.MethodGet, "/admin/groups/"+testutil.Itoa(empty)+"/rpm-overrides", "")
	expect(t, res, http.StatusOK, "empty list")
	if res.Raw != `{"group_id":`+testutil.Itoa(empty)+`,"entries":[]}`+"\n" {
		t.Errorf("empty list = %s", res.Raw)
	}
	expect(t, call(t, h, http.MethodGet, "/admin/groups/999999/rpm-overrides", ""), http.StatusNotFound, "unknown group")
	expect(t, call(t, h, http.MethodGet, "/admin/groups/abc/rpm-overrides", ""), http.StatusBadRequest, "bad id")
}

func TestGroupOverridesReplace(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	other := storetest.SeedGroup(t, pool, "other", 10)
	u1, u2, u3 := storetest.SeedUser(t, pool, 0), storetest.SeedUser(t, pool, 0), storetest.SeedUser(t, pool, 0)
	storetest.SeedOverride(t, pool, u1, g, 5)
	storetest.SeedOverride(t, pool, u2, g, 6)
	storetest.SeedOverride(t, pool, u1, other, 9)
	h := b.handler()
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	// The body's set replaces the whole set: u1 changes, u2 (absent) goes,
	// u3 arrives; null for u1... is tested below.
	res := call(t, h, http.MethodPut, path, `{"entries":[{"user_id":`+testutil.Itoa(u1)+`,"rpm_override":8},{"user_id":`+testutil.Itoa(u3)+`,"rpm_override":0}]}`)
	expect(t, res, http.StatusOK, "replace")
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u1: 8, u3: 0}) {
		t.Errorf("after replace: %v", got)
	}
	if n := len(res.JSON["entries"].([]any)); n != 2 || num(t, res.JSON, "group_id") != g {
		t.Errorf("replace answer = %s, want the new set", res.Raw)
	}
	if got := storetest.Overrides(t, pool, other); !reflect.DeepEqual(got, map[int64]int64{u1: 9}) {
		t.Errorf("other group changed: %v", got)
	}
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeGroup, g}}) {
		t.Errorf("invalidations = %v, want group %d", got, g)
	}

	// null removes one.
	res = call(t, h, http.MethodPut, path, `{"entries":[{"user_id":`+testutil.Itoa(u1)+`,"rpm_override":null},{"user_id":`+testutil.Itoa(u3)+`,"rpm_override":0}]}`)
	expect(t, res, http.StatusOK, "replace with null")
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u3: 0}) {
		t.Errorf("after null: %v", got)
	}
	b.takeInvalidations()

	// Invalid bodies: 400 and nothing changes.
	for name, body := range map[string]string{
		"negative":       `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":-1}]}`,
		"too large":      `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":4294967296}]}`,
		"fraction":       `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":1.5}]}`,
		"string":         `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":"5"}]}`,
		"zero user":      `{"entries":[{"user_id":0,"rpm_override":5}]}`,
		"missing user":   `{"entries":[{"rpm_override":5}]}`,
		"duplicate":      `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":5},{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":6}]}`,
		"unknown field":  `{"entries":[],"extra":1}`,
		"entry field":    `{"entries":[{"user_id":` + testutil.Itoa(u1) + `,"rpm_override":5,"x":1}]}`,
		"no entries":     `{}`,
		"null entries":   `{"entries":null}`,
		"not an object":  `[]`,
		"trailing data":  `{"entries":[]} {}`,
		"empty body":     ``,
		"broken":         `{"entries":[`,
		"entries object": `{"entries":{}}`,
	} {
		expect(t, call(t, h, http.MethodPut, path, body), http.StatusBadRequest, name)
	}
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u3: 0}) {
		t.Errorf("after bad bodies: %v", got)
	}

	// Unknown user id: 404 and nothing changes.
	res = call(t, h, http.MethodPut, path, `{"entries":[{"user_id":`+testutil.Itoa(u2)+`,"rpm_override":1},{"user_id":999999,"rpm_override":2}]}`)
	expect(t, res, http.StatusNotFound, "unknown user")
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u3: 0}) {
		t.Errorf("after unknown user: %v", got)
	}
	expect(t, call(t, h, http.MethodPut, "/admin/groups/999999/rpm-overrides", `{"entries":[]}`), http.StatusNotFound, "unknown group")
	if got := b.takeInvalidations(); len(got) != 0 {
		t.Errorf("failed writes invalidated %v", got)
	}

	// An empty set removes every override.
	expect(t, call(t, h, http.MethodPut, path, `{"entries":[]}`), http.StatusOK, "replace with []")
	if got := storetest.Overrides(t, pool, g); len(got) != 0 {
		t.Errorf("after []: %v", got)
	}
}

func TestGroupOverridesClearAll(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	other := storetest.SeedGroup(t, pool, "other", 10)
	for i := 0; i < 3; i++ {
		u := storetest.SeedUser(t, pool, 0)
		storetest.SeedOverride(t, pool, u, g, int64(i))
		storetest.SeedOverride(t, pool, u, other, 1)
	}
	h := b.handler()
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	res := call(t, h, http.MethodDelete, path, "")
	expect(t, res, http.StatusOK, "clear")
	if num(t, res.JSON, "group_id") != g || num(t, res.JSON, "cleared") != 3 {
		t.Errorf("first clear = %s, want cleared 3", res.Raw)
	}
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeGroup, g}}) {
		t.Errorf("invalidations = %v", got)
	}
	res = call(t, h, http.MethodDelete, path, "")
	expect(t, res, http.StatusOK, "clear again")
	if num(t, res.JSON, "cleared") != 0 {
		t.Errorf("second clear = %s, want cleared 0", res.Raw)
	}
	if len(storetest.Overrides(t, pool, g)) != 0 || len(storetest.Overrides(t, pool, other)) != 3 {
		t.Errorf("after clear: %v / %v", storetest.Overrides(t, pool, g), storetest.Overrides(t, pool, other))
	}
	if b.g.ClearRuns() != 2 {
		t.Errorf("ClearRuns = %d, want 2 sequential runs", b.g.ClearRuns())
	}
	expect(t, call(t, h, http.MethodDelete, "/admin/groups/999999/rpm-overrides", ""), http.StatusNotFound, "unknown group")
	expect(t, call(t, h, http.MethodDelete, "/admin/groups/x/rpm-overrides", ""), http.StatusBadRequest, "bad id")
}

func TestGroupOverridesClearAllConcurrent(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	for i := 0; i < 4; i++ {
		storetest.SeedOverride(t, pool, storetest.SeedUser(t, pool, 0), g, 1)
	}
	h := b.handler()
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	// The first call's delete waits on a table lock while the others arrive.
	hold := storetest.HoldLock(t, pool, `lock table rpm_user_group_overrides in share row exclusive mode`)
	const n = 10
	results := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i] = call(t, h, http.MethodDelete, path, "") })
	}
	hold.WaitFor(1)
	time.Sleep(300 * time.Millisecond) // the other nine arrive meanwhile
	hold.Release()
	wg.Wait()
	for i, res := range results {
		expect(t, res, http.StatusOK, "concurrent clear")
		if res.Raw != results[0].Raw {
			t.Errorf("answer %d = %s, want the shared %s", i, res.Raw, results[0].Raw)
		}
	}
	if num(t, results[0].JSON, "cleared") != 4 {
		t.Errorf("shared answer = %s, want cleared 4", results[0].Raw)
	}
	if runs := b.g.ClearRuns(); runs != 1 {
		t.Errorf("the store delete ran %d times, want 1", runs)
	}
	if got := b.takeInvalidations(); len(got) != 1 {
		t.Errorf("invalidations = %v, want one", got)
	}
}

// TestGroupOverridesClearAllAfterAWrite: a clear that arrives after an
// override write does not join a clear that started before it. Clear #1
// is held in the database (KEY SHARE on the group's rows blocks deleting
// them, not adding rows), an override is added, and clear #2 runs its own
// delete: the set ends empty, #1 reports the 3 rows it saw, #2 the added
// one.
func TestGroupOverridesClearAllAfterAWrite(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	for range 3 {
		storetest.SeedOverride(t, pool, storetest.SeedUser(t, pool, 0), g, 1)
	}
	added := storetest.SeedUser(t, pool, 0)
	h := b.handler()
	path := "/admin/groups/" + testutil.Itoa(g) + "/rpm-overrides"

	hold := storetest.HoldLock(t, pool, `select 1 from rpm_user_group_overrides where group_id = $1 for key share`, g)
	var wg sync.WaitGroup
	var first, second response
	wg.Go(func() { first = call(t, h, http.MethodDelete, path, "") })
	hold.WaitFor(1)
	expect(t, call(t, h, http.MethodPut, "/admin/users/"+testutil.Itoa(added)+"/groups/"+testutil.Itoa(g)+"/rpm-override", `{"rpm_override":7}`),
		http.StatusOK, "set an override while clear #1 is held")
	wg.Go(func() { second = call(t, h, http.MethodDelete, path, "") })
	hold.WaitFor(2)
	hold.Release()
	wg.Wait()

	expect(t, first, http.StatusOK, "clear #1")
	expect(t, second, http.StatusOK, "clear #2")
	if num(t, first.JSON, "cleared") != 3 {
		t.Errorf("clear #1 = %s, want cleared 3", first.Raw)
	}
	if num(t, second.JSON, "cleared") != 1 {
		t.Errorf("clear #2 = %s, want cleared 1 (the override added after clear #1 began)", second.Raw)
	}
	if got := storetest.Overrides(t, pool, g); len(got) != 0 {
		t.Errorf("overrides left after both clears answered: %v", got)
	}
	if runs := b.g.ClearRuns(); runs != 2 {
		t.Errorf("the store delete ran %d times, want 2", runs)
	}
}

func TestSetOverride(t *testing.T) {
	b, pool := newPGBackend(t)
	g := storetest.SeedGroup(t, pool, "g", 10)
	u := storetest.SeedUser(t, pool, 0)
	h := b.handler()
	path := "/admin/users/" + testutil.Itoa(u) + "/groups/" + testutil.Itoa(g) + "/rpm-override"

	res := call(t, h, http.MethodPut, path, `{"rpm_override":12}`)
	expect(t, res, http.StatusOK, "set")
	if num(t, res.JSON, "rpm_override") != 12 || num(t, res.JSON, "user_id") != u || num(t, res.JSON, "group_id") != g {
		t.Errorf("set answer = %s", res.Raw)
	}
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u: 12}) {
		t.Errorf("after set: %v", got)
	}
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeUser, u}}) {
		t.Errorf("invalidations = %v, want user %d", got, u)
	}

	for name, body := range map[string]string{
		"negative": `{"rpm_override":-3}`,
		"missing":  `{}`,
		"string":   `{"rpm_override":"3"}`,
		"unknown":  `{"rpm_override":3,"foo":1}`,
		"empty":    ``,
	} {
		expect(t, call(t, h, http.MethodPut, path, body), http.StatusBadRequest, name)
	}
	if got := storetest.Overrides(t, pool, g); !reflect.DeepEqual(got, map[int64]int64{u: 12}) {
		t.Errorf("after bad bodies: %v", got)
	}
	expect(t, call(t, h, http.MethodPut, "/admin/users/999999/groups/"+testutil.Itoa(g)+"/rpm-override", `{"rpm_override":1}`), http.StatusNotFound, "unknown user")
	expect(t, call(t, h, http.MethodPut, "/admin/users/"+testutil.Itoa(u)+"/groups/999999/rpm-override", `{"rpm_override":1}`), http.StatusNotFound, "unknown group")
	expect(t, call(t, h, http.MethodPut, "/admin/users/"+testutil.Itoa(u)+"/groups/zz/rpm-override", `{"rpm_override":1}`), http.StatusBadRequest, "bad gid")
	if got := b.takeInvalidations(); len(got) != 0 {
		t.Errorf("failed writes invalidated %v", got)
	}

	res = call(t, h, http.MethodPut, path, `{"rpm_override":null}`)
	expect(t, res, http.StatusOK, "clear one")
	if v, ok := res.JSON["rpm_override"]; !ok || v != nil {
		t.Errorf("clear answer = %s, want rpm_override null", res.Raw)
	}
	if got := storetest.Overrides(t, pool, g); len(got) != 0 {
		t.Errorf("after clear: %v", got)
	}
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeUser, u}}) {
		t.Errorf("invalidations = %v, want user %d", got, u)
	}
}
