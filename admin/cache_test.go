package admin

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/caddyrpm/caddy-rpm/store"
)

func TestAuthCacheInvalidation(t *testing.T) {
	b, _ := newPGBackend(t)
	h := b.handler()

	res := call(t, h, http.MethodDelete, "/admin/auth-cache", "")
	expect(t, res, http.StatusOK, "flush")
	if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{store.ScopeAll, 0}}) {
		t.Errorf("flush invalidations = %v", got)
	}
	for kind, scope := range map[string]store.Scope{"keys": store.ScopeKey, "users": store.ScopeUser, "groups": store.ScopeGroup} {
		res := call(t, h, http.MethodDelete, "/admin/auth-cache/"+kind+"/42", "")
		expect(t, res, http.StatusOK, kind)
		if res.JSON["invalidated"] != string(scope) || num(t, res.JSON, "id") != 42 {
			t.Errorf("%s answer = %s", kind, res.Raw)
		}
		if got := b.takeInvalidations(); !reflect.DeepEqual(got, []invalidation{{scope, 42}}) {
			t.Errorf("%s invalidations = %v", kind, got)
		}
	}
	expect(t, call(t, h, http.MethodDelete, "/admin/auth-cache/zones/1", ""), http.StatusNotFound, "unknown kind")
	expect(t, call(t, h, http.MethodDelete, "/admin/auth-cache/users/abc", ""), http.StatusBadRequest, "bad id")
	expect(t, call(t, h, http.MethodGet, "/admin/auth-cache", ""), http.StatusMethodNotAllowed, "GET flush")
	if got := b.takeInvalidations(); len(got) != 0 {
		t.Errorf("refused calls invalidated %v", got)
	}
}
