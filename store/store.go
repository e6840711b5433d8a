// Package store reads and writes the auth data: keys, users, groups and the
// per-(user, group) RPM overrides. Postgres is the source of truth; the JSON
// keys file is a read-only store for running without any server.
package store

import (
	"context"
	"errors"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

var (
	// ErrNotFound reports an unknown key, user or group.
	ErrNotFound = errors.New("not found")
	// ErrInvalid reports a write with invalid values (e.g. a negative limit).
	ErrInvalid = errors.New("invalid value")
)

// Scope names what an invalidation reaches.
type Scope string

// The scopes of an invalidation.
const (
	ScopeAll   Scope = "all"
	ScopeKey   Scope = "key"
	ScopeUser  Scope = "user"
	ScopeGroup Scope = "group"
)

// Source is what the request path and the admin reads need from a store:
// snapshots, the keys an invalidation reaches, and the limits rpm-status
// shows. Both stores implement it.
type Source interface {
	// LoadSnapshot returns the snapshot of the key whose SHA-256 is keyHash
	// (lowercase hex), including the user's override in the key's group, in
	// one read. An unknown key yields ErrNotFound.
	LoadSnapshot(ctx context.Context, keyHash string) (*snapshot.Snapshot, error)

	// KeyHashes lists the key hashes (lowercase hex) an invalidation of
	// scope/id reaches, so their L2 entries can be deleted.
	KeyHashes(ctx context.Context, scope Scope, id int64) ([]string, error)

	// UserRPM returns the user's limit and the groups of their keys and
	// overrides, ordered by group id.
	UserRPM(ctx context.Context, userID int64) (*UserRPM, error)
	// GroupOverrides lists a group's overrides ordered by user id.
	GroupOverrides(ctx context.Context, groupID int64) ([]Override, error)
}

// ManySource is a Source that can also load many snapshots in one read;
// the cache's background reloads use it (Postgres).
type ManySource interface {
	// LoadSnapshots returns the snapshots of the keys whose SHA-256 are
	// keyHashes, in their order, nil for a key the store lacks.
	LoadSnapshots(ctx context.Context, keyHashes []string) ([]*snapshot.Snapshot, error)
}

// Writable is a store the admin API can change: Postgres, not the keys
// file. Every write also notifies listeners (by trigger), so other
// instances learn of it whoever wrote.
type Writable interface {
	// ReplaceGroupOverrides replaces the group's whole override set.
	ReplaceGroupOverrides(ctx context.Context, groupID int64, entries []Override) error
	// ClearGroupOverrides deletes every override of the group and returns
	// how many rows it deleted.
	ClearGroupOverrides(ctx context.Context, groupID int64) (int64, error)
	// SetOverride sets (value != nil) or clears (nil) one override.
	SetOverride(ctx context.Context, userID, groupID int64, value *int64) error
	// UpdateUser, UpdateGroup and UpdateKey apply a partial update.
	UpdateUser(ctx context.Context, id int64, p Patch) error
	UpdateGroup(ctx context.Context, id int64, p Patch) error
	UpdateKey(ctx context.Context, id int64, p Patch) error
}

// Patch is a partial update; nil fields are left unchanged.
type Patch struct {
	RPMLimit *int64  `json:"rpm_limit,omitempty"`
	Status   *string `json:"status,omitempty"`
	// Concurrency is a user's cap on requests in flight (0 = none); only
	// users have one.
	Concurrency *int64 `json:"concurrency,omitempty"`
}

// Override is one (user, group) RPM override. A nil RPMOverride in a
// replace request means "no override for this user".
type Override struct {
	UserID      int64  `json:"user_id"`
	RPMOverride *int64 `json:"rpm_override"`
}

// UserRPM is what rpm-status needs from the store.
type UserRPM struct {
	UserID   int64
	RPMLimit int64
	// Concurrency is the user's cap on requests in flight, 0 for none.
	Concurrency int64
	Groups      []UserGroup
}

// UserGroup is one group of a user: from their keys or their overrides.
type UserGroup struct {
	GroupID  int64
	Name     string
	RPMLimit int64
	Override *int64
}

// Event is a change notification from the store (Postgres NOTIFY).
type Event struct {
	Scope   Scope
	ID      int64
	KeyHash string // set for key events when known
}

// Listener is implemented by stores that can notify about changes made by
// any writer, including plain SQL.
type Listener interface {
	// Listen calls fn for every change until ctx ends. It reconnects on its
	// own and calls onListen every time it starts listening: with gap false
	// the first time, and true after a reconnect, when events may have been
	// lost. Changes made before a call of onListen may have no event.
	Listen(ctx context.Context, fn func(Event), onListen func(gap bool))
}
