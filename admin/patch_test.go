package admin

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func TestPatchUserAndGroup(t *testing.T) {
	b, pool := newPGBackend(t)
	u := storetest.SeedUser(t, pool, 20)
	g := storetest.SeedGroup(t, pool, "g", 10)
	h := b.handler()
	ctx := context.Background()

	read := func(table string, id int64) (limit int64, status string) {
		t.Helper()
		if err := pool.QueryRow(ctx, `select rpm_limit, status from `+table+` where id = $1`, id).Scan(&limit, &status); err != nil {
			t.Fatal(err)
		}
		return limit, status
	}

	for _, tc := range []struct {
		path, table string
		id          int64
		scope       store.Scope
		idField     string
	}{
		{"/admin/users/", "rpm_users", u, store.ScopeUser, "user_id"},
		{"/admin/groups/", "rpm_groups", g, store.ScopeGroup, "group_id"},
	} {
		path := tc.path + testutil.Itoa(tc.id)
		res := call(t, h, http.MethodPatch, path, `{"rpm_limit":33}`)
		expect(t, res, http.StatusOK, "patch limit "+path)
		if num(t, res.JSON, tc.idField) != tc.id || num(t, res.JSON, "rpm_limit") != 33 {
			t.Errorf("answer = %s", res.Raw)
		}
		if l, s := read(tc.table, tc.id); l != 33 || s != "active" {
			t.Errorf("%s after limit patch: %d %s", path, l, s)
		}
		if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{tc.scope, tc.id}}) {
			t.Errorf("%s invalidations = %v", path, got)
		}

		expect(t, call(t, h, http.MethodPatch, path, `{"status":"disabled","rpm_limit":0}`), http.StatusOK, "patch both")
		if l, s := read(tc.table, tc.id); l != 0 || s != "disabled" {
			t.Errorf("%s after both: %d %s", path, l, s)
		}
		expect(t, call(t, h, http.MethodPatch, path, `{"status":"active"}`), http.StatusOK, "patch status")
		if l, s := read(tc.table, tc.id); l != 0 || s != "active" {
			t.Errorf("%s after status: %d %s", path, l, s)
		}
		b.takeInvalidations()

		for name, body := range map[string]string{
			"negative":      `{"rpm_limit":-1}`,
			"too large":     `{"rpm_limit":3000000000}`,
			"string limit":  `{"rpm_limit":"5"}`,
			"bad status":    `{"status":"banned"}`,
			"status number": `{"status":1}`,
			"empty patch":   `{}`,
			"nulls":         `{"rpm_limit":null,"status":null}`,
			"unknown field": `{"rpm_limit":5,"name":"x"}`,
			"no body":       ``,
			"array":         `[1]`,
		} {
			expect(t, call(t, h, http.MethodPatch, path, body), http.StatusBadRequest, path+" "+name)
		}
		if l, s := read(tc.table, tc.id); l != 0 || s != "active" {
			t.Errorf("%s after bad bodies: %d %s", path, l, s)
		}
		expect(t, call(t, h, http.MethodPatch, tc.path+"999999", `{"rpm_limit":1}`), http.StatusNotFound, "unknown id")
		expect(t, call(t, h, http.MethodPatch, tc.path+"abc", `{"rpm_limit":1}`), http.StatusBadRequest, "bad id")
		if got := b.takeInvalidations(); len(got) != 0 {
			t.Errorf("failed writes invalidated %v", got)
		}
	}
}

func TestPatchKey(t *testing.T) {
	b, pool := newPGBackend(t)
	u := storetest.SeedUser(t, pool, 0)
	k, _ := storetest.SeedKey(t, pool, u, nil)
	h := b.handler()
	path := "/admin/keys/" + testutil.Itoa(k)
	status := func() string {
		t.Helper()
		var s string
		if err := pool.QueryRow(context.Background(), `select status from rpm_api_keys where id = $1`, k).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	res := call(t, h, http.MethodPatch, path, `{"status":"disabled"}`)
	expect(t, res, http.StatusOK, "revoke")
	if num(t, res.JSON, "key_id") != k || res.JSON["status"] != "disabled" || status() != "disabled" {
		t.Errorf("revoke: answer %s, status %s", res.Raw, status())
	}
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeKey, k}}) {
		t.Errorf("invalidations = %v, want key %d", got, k)
	}
	expect(t, call(t, h, http.MethodPatch, path, `{"status":"active"}`), http.StatusOK, "restore")
	if status() != "active" {
		t.Errorf("restore: status %s", status())
	}
	b.takeInvalidations()
	for name, body := range map[string]string{
		"rpm_limit":  `{"rpm_limit":5}`,
		"both":       `{"status":"disabled","rpm_limit":5}`,
		"empty":      `{}`,
		"null":       `{"status":null}`,
		"bad status": `{"status":"revoked"}`,
	} {
		expect(t, call(t, h, http.MethodPatch, path, body), http.StatusBadRequest, name)
	}
	if status() != "active" {
		t.Errorf("after bad bodies: status %s", status())
	}
	expect(t, call(t, h, http.MethodPatch, "/admin/keys/999999", `{"status":"disabled"}`), http.StatusNotFound, "unknown key")
	if got := b.takeInvalidations(); len(got) != 0 {
		t.Errorf("failed writes invalidated %v", got)
	}
}
