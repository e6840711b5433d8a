package admin

import (
	"context"
	"net/http"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// limitPatch is the body of PATCH /admin/groups/{id}.
type limitPatch struct {
	RPMLimit *int64  `json:"rpm_limit"`
	Status   *string `json:"status"`
}

// userPatch is the body of PATCH /admin/users/{id}: a group's fields and
// the user's concurrency (0 = no cap).
type userPatch struct {
	limitPatch
	Concurrency *int64 `json:"concurrency"`
}

// statusPatch is the body of PATCH /admin/keys/{id}.
type statusPatch struct {
	Status *string `json:"status"`
}

// patchUser answers PATCH /admin/users/{id}.
func (h *Handler) patchUser(w http.ResponseWriter, r *http.Request, c Core) error {
	var p userPatch
	return h.patchLimits(w, r, &p, "user_id", "update user", c.PatchUser)
}

// patchGroup answers PATCH /admin/groups/{id}.
func (h *Handler) patchGroup(w http.ResponseWriter, r *http.Request, c Core) error {
	var p limitPatch
	return h.patchLimits(w, r, &p, "group_id", "update group", c.PatchGroup)
}

// patchBody is a PATCH body of limits: limitPatch or userPatch.
type patchBody interface {
	// patch returns the body's fields (nil when absent) and how to ask
	// for them in an error.
	patch() (p gateway.Patch, fields string)
}

func (p *limitPatch) patch() (gateway.Patch, string) {
	return gateway.Patch{RPMLimit: p.RPMLimit, Status: p.Status}, `"rpm_limit" and/or "status"`
}

func (p *userPatch) patch() (gateway.Patch, string) {
	gp, _ := p.limitPatch.patch()
	gp.Concurrency = p.Concurrency
	return gp, `"rpm_limit", "concurrency" and/or "status"`
}

func (h *Handler) patchLimits(w http.ResponseWriter, r *http.Request, body patchBody, idField, op string,
	patch func(context.Context, int64, gateway.Patch) error) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := decodeBody(w, r, body); err != nil {
		return err
	}
	p, fields := body.patch()
	if p.RPMLimit == nil && p.Status == nil && p.Concurrency == nil {
		return apiError(http.StatusBadRequest, "invalid body: give "+fields)
	}
	answer := map[string]any{idField: id}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"rpm_limit", p.RPMLimit}, {"concurrency", p.Concurrency}} {
		if f.v == nil {
			continue
		}
		if err := gateway.CheckLimit(f.name, *f.v); err != nil {
			return badRequest(err)
		}
		answer[f.name] = *f.v
	}
	if p.Status != nil {
		if err := gateway.CheckStatus(*p.Status); err != nil {
			return badRequest(err)
		}
		answer["status"] = *p.Status
	}
	if err := patch(r.Context(), id, p); err != nil {
		return h.coreError(r, op, err)
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
