package admin

import (
	"context"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// Core is what the admin routes need from the gateway: reads, the changes
// (each of which invalidates what it reaches) and explicit invalidation.
// *gateway.Gateway implements it.
type Core interface {
	// Status is a user's limits and current-window counts.
	Status(ctx context.Context, userID int64) (*gateway.Status, error)
	// GroupOverrides lists a group's overrides ordered by user id.
	GroupOverrides(ctx context.Context, groupID int64) ([]gateway.Override, error)
	// ReplaceGroupOverrides makes entries the group's whole override set.
	ReplaceGroupOverrides(ctx context.Context, groupID int64, entries []gateway.Override) error
	// ClearOverrides deletes every override of the group ("clear all").
	ClearOverrides(ctx context.Context, groupID int64) (int64, error)
	// SetOverride sets (v != nil) or clears (nil) one override.
	SetOverride(ctx context.Context, userID, groupID int64, v *int64) error
	// PatchUser, PatchGroup and PatchKey apply a partial update.
	PatchUser(ctx context.Context, id int64, p gateway.Patch) error
	PatchGroup(ctx context.Context, id int64, p gateway.Patch) error
	PatchKey(ctx context.Context, id int64, p gateway.Patch) error
	// Invalidate drops the cached snapshots scope/id reaches, on every
	// instance; ScopeAll drops all of them.
	Invalidate(ctx context.Context, scope gateway.Scope, id int64) error
}

var _ Core = (*gateway.Gateway)(nil)

// App is what the admin modules need from the rpm app (caddyrpm.App),
// which they find through Caddy's context: the gateway of its
// configuration and the admin token.
type App interface {
	// Gateway is the core of the running configuration.
	Gateway() *gateway.Gateway
	// AdminToken is the bearer token the admin routes require; "" = none.
	AdminToken() string
}
