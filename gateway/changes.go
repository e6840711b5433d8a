package gateway

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/store"
)

// Override is one (user, group) override; a nil RPMOverride in
// ReplaceGroupOverrides means none for that user.
type Override = store.Override

// Patch is a partial update of a user, group or key; nil fields stay.
type Patch = store.Patch

// MaxLimit is the largest limit or override the store holds.
const MaxLimit = math.MaxInt32

// CheckLimit validates a limit or override value named field.
func CheckLimit(field string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%s must be >= 0, got %d", field, v)
	}
	if v > MaxLimit {
		return fmt.Errorf("%s must be <= %d, got %d", field, MaxLimit, v)
	}
	return nil
}

// CheckStatus validates a status value.
func CheckStatus(s string) error {
	if s != "active" && s != "disabled" {
		return fmt.Errorf(`status must be "active" or "disabled", got %q`, s)
	}
	return nil
}

// Every change below writes to the store and then invalidates what it
// reaches, so this instance enforces the new value at once. Postgres
// triggers notify every instance as well, so a failed invalidation is
// logged, not returned: the change itself succeeded.

// GroupOverrides lists a group's overrides ordered by user id.
func (g *Gateway) GroupOverrides(ctx context.Context, gid int64) ([]Override, error) {
	entries, err := g.source.GroupOverrides(ctx, gid)
	if entries == nil && err == nil {
		entries = []Override{}
	}
	return entries, err
}

// SetOverride sets (v != nil) or clears (nil) the user's override in the
// group.
func (g *Gateway) SetOverride(ctx context.Context, uid, gid int64, v *int64) error {
	if g.writable == nil {
		return ErrReadOnly
	}
	g.clearsMustNotJoin(gid)
	if err := g.writable.SetOverride(ctx, uid, gid, v); err != nil {
		return err
	}
	g.invalidateAfterChange(ctx, ScopeUser, uid)
	return nil
}

// ReplaceGroupOverrides makes entries the group's whole override set.
func (g *Gateway) ReplaceGroupOverrides(ctx context.Context, gid int64, entries []Override) error {
	if g.writable == nil {
		return ErrReadOnly
	}
	g.clearsMustNotJoin(gid)
	if err := g.writable.ReplaceGroupOverrides(ctx, gid, entries); err != nil {
		return err
	}
	g.invalidateAfterChange(ctx, ScopeGroup, gid)
	return nil
}

// clearTimeout bounds a shared "clear all", which outlives its callers.
const clearTimeout = 30 * time.Second

// ClearOverrides deletes every override of the group ("clear all") and
// returns how many it deleted. It is idempotent (a repeat clears 0), and
// concurrent calls for one group collapse into a single delete whose
// answer they all share — but only calls that arrive before this gateway
// makes another change to the group's overrides (see clearsMustNotJoin):
// a clear that arrives after such a change runs its own delete, so it never
// answers with the result of a delete that may have run before the
// change's rows existed. A caller whose ctx ends stops waiting; the shared
// delete carries on.
func (g *Gateway) ClearOverrides(ctx context.Context, gid int64) (int64, error) {
	if g.writable == nil {
		return 0, ErrReadOnly
	}
	ch := g.clears.DoChan(clearKey(gid), func() (any, error) {
		// Shared by every collapsed caller: not tied to the first caller.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), clearTimeout)
		defer cancel()
		g.clearRuns.Add(1)
		n, err := g.writable.ClearGroupOverrides(sctx, gid)
		if err != nil {
			return int64(0), err
		}
		g.invalidateAfterChange(sctx, ScopeGroup, gid)
		return n, nil
	})
	select {
	case res := <-ch:
		return res.Val.(int64), res.Err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ClearRuns reports how many times ClearOverrides ran its store delete;
// calls collapsed into one count once.
func (g *Gateway) ClearRuns() int64 { return g.clearRuns.Load() }

func clearKey(gid int64) string { return strconv.FormatInt(gid, 10) }

// clearsMustNotJoin is called by every change to a group's overrides
// before it reaches the store: a "clear all" already in flight for the
// group may have deleted before this change lands, so later clears run
// their own delete instead of joining it (its own callers still get its
// answer).
func (g *Gateway) clearsMustNotJoin(gid int64) { g.clears.Forget(clearKey(gid)) }

// PatchUser changes a user's limit and/or status.
func (g *Gateway) PatchUser(ctx context.Context, id int64, p Patch) error {
	return g.patch(ctx, ScopeUser, id, p)
}

// PatchGroup changes a group's limit and/or status.
func (g *Gateway) PatchGroup(ctx context.Context, id int64, p Patch) error {
	return g.patch(ctx, ScopeGroup, id, p)
}

// PatchKey changes a key's status (keys have no limit).
func (g *Gateway) PatchKey(ctx context.Context, id int64, p Patch) error {
	return g.patch(ctx, ScopeKey, id, p)
}

func (g *Gateway) patch(ctx context.Context, scope Scope, id int64, p Patch) error {
	if g.writable == nil {
		return ErrReadOnly
	}
	var err error
	switch scope {
	case ScopeUser:
		err = g.writable.UpdateUser(ctx, id, p)
	case ScopeGroup:
		err = g.writable.UpdateGroup(ctx, id, p)
	default:
		err = g.writable.UpdateKey(ctx, id, p)
	}
	if err != nil {
		return err
	}
	g.invalidateAfterChange(ctx, scope, id)
	return nil
}

func (g *Gateway) invalidateAfterChange(ctx context.Context, scope Scope, id int64) {
	if err := g.Invalidate(ctx, scope, id); err != nil {
		g.logger.Warn("invalidate after admin write",
			zap.String("scope", string(scope)), zap.Int64("id", id), zap.Error(err))
	}
}
