package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/store"
)

// overridesBody is the body and answer of the group overrides routes.
type overridesBody struct {
	GroupID int64            `json:"group_id"`
	Entries []store.Override `json:"entries"`
}

// listOverrides answers GET /admin/groups/{id}/rpm-overrides.
func (h *Handler) listOverrides(w http.ResponseWriter, r *http.Request, b Backend) {
	gid, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	h.writeOverrides(w, r, b, gid)
}

func (h *Handler) writeOverrides(w http.ResponseWriter, r *http.Request, b Backend, gid int64) {
	entries, err := b.Store().GroupOverrides(r.Context(), gid)
	if err != nil {
		h.storeError(w, r, "list overrides", err)
		return
	}
	if entries == nil {
		entries = []store.Override{}
	}
	writeJSON(w, http.StatusOK, overridesBody{GroupID: gid, Entries: entries})
}

// replaceOverrides answers PUT /admin/groups/{id}/rpm-overrides: the body's
// entries become the group's whole set; an entry with a null rpm_override
// means no override for that user. It answers the new set.
func (h *Handler) replaceOverrides(w http.ResponseWriter, r *http.Request, b Backend) {
	gid, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	var body struct {
		Entries *[]store.Override `json:"entries"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Entries == nil {
		writeError(w, http.StatusBadRequest, `invalid body: "entries" is required (use [] to remove every override)`)
		return
	}
	seen := make(map[int64]bool, len(*body.Entries))
	for i, e := range *body.Entries {
		if e.UserID <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("entries[%d]: user_id must be a positive integer", i))
			return
		}
		if seen[e.UserID] {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("entries[%d]: user_id %d appears more than once", i, e.UserID))
			return
		}
		seen[e.UserID] = true
		if e.RPMOverride != nil {
			if err := checkLimit("rpm_override", *e.RPMOverride); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("entries[%d]: %v", i, err))
				return
			}
		}
	}
	h.clearsMustNotJoin(gid)
	if err := b.Store().ReplaceGroupOverrides(r.Context(), gid, *body.Entries); err != nil {
		h.storeError(w, r, "replace overrides", err)
		return
	}
	h.invalidate(r.Context(), b, store.ScopeGroup, gid)
	h.writeOverrides(w, r, b, gid)
}

// clearResult is the answer of "clear all".
type clearResult struct {
	GroupID int64 `json:"group_id"`
	Cleared int64 `json:"cleared"`
}

// clearOverrides answers DELETE /admin/groups/{id}/rpm-overrides ("clear
// all"). It is idempotent (a repeat clears 0), and concurrent calls for one
// group collapse into a single store delete whose answer they all share —
// but only calls that arrive before this instance receives another write
// to the group's overrides (see clearsMustNotJoin): a clear that arrives
// after a PUT runs its own delete, so it never answers with the result of
// a delete that may have run before that PUT's rows existed.
func (h *Handler) clearOverrides(w http.ResponseWriter, r *http.Request, b Backend) {
	gid, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	ch := h.clears.DoChan(clearKey(gid), func() (any, error) {
		// Shared by every collapsed caller: not tied to the first
		// caller's connection.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
		defer cancel()
		h.clearRuns.Add(1)
		n, err := b.Store().ClearGroupOverrides(ctx, gid)
		if err != nil {
			return nil, err
		}
		h.invalidate(ctx, b, store.ScopeGroup, gid)
		return clearResult{GroupID: gid, Cleared: n}, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			h.storeError(w, r, "clear overrides", res.Err)
			return
		}
		writeJSON(w, http.StatusOK, res.Val)
	case <-r.Context().Done():
		// The client went away, or requestTimeout passed; the shared
		// delete carries on either way.
		if err := r.Context().Err(); errors.Is(err, context.DeadlineExceeded) {
			h.storeError(w, r, "clear overrides", err)
		}
	}
}

func clearKey(gid int64) string { return strconv.FormatInt(gid, 10) }

// clearsMustNotJoin is called by every write to a group's overrides before
// it reaches the store: a "clear all" already in flight for the group may
// have deleted before this write lands, so later clears run their own
// delete instead of joining it (its own callers still get its answer).
func (h *Handler) clearsMustNotJoin(gid int64) { h.clears.Forget(clearKey(gid)) }

// setOverride answers PUT /admin/users/{uid}/groups/{gid}/rpm-override:
// {"rpm_override": N} sets the user's override in the group, null clears it.
func (h *Handler) setOverride(w http.ResponseWriter, r *http.Request, b Backend) {
	uid, ok := pathID(w, r, "uid")
	if !ok {
		return
	}
	gid, ok := pathID(w, r, "gid")
	if !ok {
		return
	}
	var body struct {
		RPMOverride optional[int64] `json:"rpm_override"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if !body.RPMOverride.Set {
		writeError(w, http.StatusBadRequest, `invalid body: "rpm_override" is required (null clears the override)`)
		return
	}
	v := body.RPMOverride.Value
	if v != nil {
		if err := checkLimit("rpm_override", *v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	h.clearsMustNotJoin(gid)
	if err := b.Store().SetOverride(r.Context(), uid, gid, v); err != nil {
		h.storeError(w, r, "set override", err)
		return
	}
	h.invalidate(r.Context(), b, store.ScopeUser, uid)
	writeJSON(w, http.StatusOK, map[string]any{"user_id": uid, "group_id": gid, "rpm_override": v})
}

// invalidate drops the snapshots a successful write reaches, so this
// instance enforces the new value at once (Postgres triggers notify every
// instance too, so a failure here is logged, not answered).
func (h *Handler) invalidate(ctx context.Context, b Backend, scope store.Scope, id int64) {
	if err := b.Invalidate(ctx, scope, id); err != nil {
		h.logger.Warn("invalidate after admin write",
			zap.String("scope", string(scope)), zap.Int64("id", id), zap.Error(err))
	}
}
