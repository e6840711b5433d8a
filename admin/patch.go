package admin

import (
	"context"
	"net/http"

	"github.com/caddyrpm/caddy-rpm/gateway"
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
func (h *Handler) patchUser(w http.ResponseWriter, r *http.Request, c Core) error {
	return h.patchLimits(w, r, "user_id", "update user", c.PatchUser)
}

// patchGroup answers PATCH /admin/groups/{id}.
func (h *Handler) patchGroup(w http.ResponseWriter, r *http.Request, c Core) error {
	return h.patchLimits(w, r, "group_id", "update group", c.PatchGroup)
}

func (h *Handler) patchLimits(w http.ResponseWriter, r *http.Request, idField, op string,
	patch func(context.Context, int64, gateway.Patch) error) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var p limitPatch
	if err := decodeBody(w, r, &p); err != nil {
		return err
	}
	if p.RPMLimit == nil && p.Status == nil {
		return apiError(http.StatusBadRequest, `invalid body: give "rpm_limit" and/or "status"`)
	}
	if p.RPMLimit != nil {
		if err := gateway.CheckLimit("rpm_limit", *p.RPMLimit); err != nil {
			return badRequest(err)
		}
	}
	if p.Status != nil {
		if err := gateway.CheckStatus(*p.Status); err != nil {
			return badRequest(err)
		}
	}
	if err := patch(r.Context(), id, gateway.Patch{RPMLimit: p.RPMLimit, Status: p.Status}); err != nil {
		return h.coreError(r, op, err)
	}
	answer := map[string]any{idField: id}
	if p.RPMLimit != nil {
		answer["rpm_limit"] = *p.RPMLimit
	}
	if p.Status != nil {
		answer["status"] = *p.Status
	}
	writeJSON(w, http.StatusOK, answer)
	return nil
}

// patchKey answers PATCH /admin/keys/{id}: {"status": "disabled"} revokes
// the key, "active" restores it.
func (h *Handler) patchKey(w http.ResponseWriter, r *http.Request, c Core) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var p statusPatch
	if err := decodeBody(w, r, &p); err != nil {
		return err
	}
	if p.Status == nil {
		return apiError(http.StatusBadRequest, `invalid body: "status" is required`)
	}
	if err := gateway.CheckStatus(*p.Status); err != nil {
		return badRequest(err)
	}
	if err := c.PatchKey(r.Context(), id, gateway.Patch{Status: p.Status}); err != nil {
		return h.coreError(r, "update key", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"key_id": id, "status": *p.Status})
	return nil
}
