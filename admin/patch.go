package admin

import (
	"context"
	"net/http"

	"github.com/caddyrpm/caddy-rpm/store"
)

// limitPatch is the body of PATCH /admin/users/{id} and /admin/groups/{id}.
type limitPatch struct {
	RPMLimit *int64  `json:"rpm_limit"`
	Status   *string `json:"status"`
}

// statusPatch is the body of PATCH /admin/keys/{id}.
type statusPatch struct {
	Status *string `json:"status"`
}

// patchUser answers PATCH /admin/users/{id}.
func (h *Handler) patchUser(w http.ResponseWriter, r *http.Request, b Backend) {
	h.patchLimits(w, r, b, "user_id", store.ScopeUser, b.Store().UpdateUser)
}

// patchGroup answers PATCH /admin/groups/{id}.
func (h *Handler) patchGroup(w http.ResponseWriter, r *http.Request, b Backend) {
	h.patchLimits(w, r, b, "group_id", store.ScopeGroup, b.Store().UpdateGroup)
}

func (h *Handler) patchLimits(w http.ResponseWriter, r *http.Request, b Backend, idField string,
	scope store.Scope, update func(context.Context, int64, store.Patch) error) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	var p limitPatch
	if !decodeBody(w, r, &p) {
		return
	}
	if p.RPMLimit == nil && p.Status == nil {
		writeError(w, http.StatusBadRequest, `invalid body: give "rpm_limit" and/or "status"`)
		return
	}
	if p.RPMLimit != nil {
		if err := checkLimit("rpm_limit", *p.RPMLimit); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if p.Status != nil {
		if err := checkStatus(*p.Status); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if err := update(r.Context(), id, store.Patch{RPMLimit: p.RPMLimit, Status: p.Status}); err != nil {
		h.storeError(w, r, "update "+string(scope), err)
		return
	}
	h.invalidate(r.Context(), b, scope, id)
	answer := map[string]any{idField: id}
	if p.RPMLimit != nil {
		answer["rpm_limit"] = *p.RPMLimit
	}
	if p.Status != nil {
		answer["status"] = *p.Status
	}
	writeJSON(w, http.StatusOK, answer)
}

// patchKey answers PATCH /admin/keys/{id}: {"status": "disabled"} revokes
// the key, "active" restores it.
func (h *Handler) patchKey(w http.ResponseWriter, r *http.Request, b Backend) {
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	var p statusPatch
	if !decodeBody(w, r, &p) {
		return
	}
	if p.Status == nil {
		writeError(w, http.StatusBadRequest, `invalid body: "status" is required`)
		return
	}
	if err := checkStatus(*p.Status); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := b.Store().UpdateKey(r.Context(), id, store.Patch{Status: p.Status}); err != nil {
		h.storeError(w, r, "update key", err)
		return
	}
	h.invalidate(r.Context(), b, store.ScopeKey, id)
	writeJSON(w, http.StatusOK, map[string]any{"key_id": id, "status": *p.Status})
}
