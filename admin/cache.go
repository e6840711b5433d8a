package admin

import (
	"net/http"

	"github.com/caddyrpm/caddy-rpm/store"
)

// flushCache answers DELETE /admin/auth-cache: every instance drops its L1
// and all L2 snapshots.
func (h *Handler) flushCache(w http.ResponseWriter, r *http.Request, b Backend) {
	if err := b.Invalidate(r.Context(), store.ScopeAll, 0); err != nil {
		h.storeError(w, r, "invalidate all", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"invalidated": store.ScopeAll})
}

// cacheScopes maps the {kind} of /admin/auth-cache/{kind}/{id} to a scope.
var cacheScopes = map[string]store.Scope{
	"keys":   store.ScopeKey,
	"users":  store.ScopeUser,
	"groups": store.ScopeGroup,
}

// invalidateCache answers DELETE /admin/auth-cache/{keys,users,groups}/{id}:
// the snapshots that id reaches are dropped on every instance.
func (h *Handler) invalidateCache(w http.ResponseWriter, r *http.Request, b Backend) {
	scope, ok := cacheScopes[r.PathValue("kind")]
	if !ok {
		writeError(w, http.StatusNotFound, "no such admin route: "+r.URL.Path+" (want keys, users or groups)")
		return
	}
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	if err := b.Invalidate(r.Context(), scope, id); err != nil {
		h.storeError(w, r, "invalidate "+string(scope), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"invalidated": scope, "id": id})
}
