package admin

import (
	"net/http"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// flushCache answers DELETE /admin/auth-cache: every instance drops its L1
// and all L2 snapshots.
func (h *Handler) flushCache(w http.ResponseWriter, r *http.Request, c Core) error {
	if err := c.Invalidate(r.Context(), gateway.ScopeAll, 0); err != nil {
		return h.coreError(r, "invalidate all", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"invalidated": gateway.ScopeAll})
	return nil
}

// cacheScopes maps the {kind} of /admin/auth-cache/{kind}/{id} to a scope.
var cacheScopes = map[string]gateway.Scope{
	"keys":   gateway.ScopeKey,
	"users":  gateway.ScopeUser,
	"groups": gateway.ScopeGroup,
}

// invalidateCache answers DELETE /admin/auth-cache/{keys,users,groups}/{id}:
// the snapshots that id reaches are dropped on every instance.
func (h *Handler) invalidateCache(w http.ResponseWriter, r *http.Request, c Core) error {
	scope, ok := cacheScopes[r.PathValue("kind")]
	if !ok {
		return apiError(http.StatusNotFound, "no such admin route: "+r.URL.Path+" (want keys, users or groups)")
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := c.Invalidate(r.Context(), scope, id); err != nil {
		return h.coreError(r, "invalidate "+string(scope), err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"invalidated": scope, "id": id})
	return nil
}
