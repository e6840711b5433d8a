package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// overridesBody is the body and answer of the group overrides routes.
type overridesBody struct {
	GroupID int64              `json:"group_id"`
	Entries []gateway.Override `json:"entries"`
}

// listOverrides answers GET /admin/groups/{id}/rpm-overrides.
func (h *Handler) listOverrides(w http.ResponseWriter, r *http.Request, c Core) error {
	gid, err := pathID(r, "id")
	if err != nil {
		return err
	}
	return h.writeOverrides(w, r, c, gid)
}

func (h *Handler) writeOverrides(w http.ResponseWriter, r *http.Request, c Core, gid int64) error {
	entries, err := c.GroupOverrides(r.Context(), gid)
	if err != nil {
		return h.coreError(r, "list overrides", err)
	}
	writeJSON(w, http.StatusOK, overridesBody{GroupID: gid, Entries: entries})
	return nil
}

// replaceOverrides answers PUT /admin/groups/{id}/rpm-overrides: the body's
// entries become the group's whole set; an entry with a null rpm_override
// means no override for that user. It answers the new set.
func (h *Handler) replaceOverrides(w http.ResponseWriter, r *http.Request, c Core) error {
	gid, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var body struct {
		Entries *[]gateway.Override `json:"entries"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	if body.Entries == nil {
		return apiError(http.StatusBadRequest, `invalid body: "entries" is required (use [] to remove every override)`)
	}
	seen := make(map[int64]bool, len(*body.Entries))
	for i, e := range *body.Entries {
		if e.UserID <= 0 {
			return apiError(http.StatusBadRequest, fmt.Sprintf("entries[%d]: user_id must be a positive integer", i))
		}
		if seen[e.UserID] {
			return apiError(http.StatusBadRequest, fmt.Sprintf("entries[%d]: user_id %d appears more than once", i, e.UserID))
		}
		seen[e.UserID] = true
		if e.RPMOverride != nil {
			if err := gateway.CheckLimit("rpm_override", *e.RPMOverride); err != nil {
				return apiError(http.StatusBadRequest, fmt.Sprintf("entries[%d]: %v", i, err))
			}
		}
	}
	if err := c.ReplaceGroupOverrides(r.Context(), gid, *body.Entries); err != nil {
		return h.coreError(r, "replace overrides", err)
	}
	return h.writeOverrides(w, r, c, gid)
}

// clearResult is the answer of "clear all".
type clearResult struct {
	GroupID int64 `json:"group_id"`
	Cleared int64 `json:"cleared"`
}

// clearOverrides answers DELETE /admin/groups/{id}/rpm-overrides ("clear
// all"); concurrent calls share one delete (gateway.ClearOverrides).
func (h *Handler) clearOverrides(w http.ResponseWriter, r *http.Request, c Core) error {
	gid, err := pathID(r, "id")
	if err != nil {
		return err
	}
	n, err := c.ClearOverrides(r.Context(), gid)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; the shared delete carries on. Nobody
		// reads an answer.
		return nil
	}
	if err != nil {
		return h.coreError(r, "clear overrides", err)
	}
	writeJSON(w, http.StatusOK, clearResult{GroupID: gid, Cleared: n})
	return nil
}

// setOverride answers PUT /admin/users/{uid}/groups/{gid}/rpm-override:
// {"rpm_override": N} sets the user's override in the group, null clears it.
func (h *Handler) setOverride(w http.ResponseWriter, r *http.Request, c Core) error {
	uid, err := pathID(r, "uid")
	if err != nil {
		return err
	}
	gid, err := pathID(r, "gid")
	if err != nil {
		return err
	}
	var body struct {
		RPMOverride optional[int64] `json:"rpm_override"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	if !body.RPMOverride.Set {
		return apiError(http.StatusBadRequest, `invalid body: "rpm_override" is required (null clears the override)`)
	}
	v := body.RPMOverride.Value
	if v != nil {
		if err := gateway.CheckLimit("rpm_override", *v); err != nil {
			return badRequest(err)
		}
	}
	if err := c.SetOverride(r.Context(), uid, gid, v); err != nil {
		return h.coreError(r, "set override", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"user_id": uid, "group_id": gid, "rpm_override": v})
	return nil
}
