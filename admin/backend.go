package admin

import (
	"context"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// Backend is what the admin routes need from the running rpm app. The app
// (caddyrpm.App) implements it; the admin module finds it at request time
// through caddy.ActiveContext().AppIfConfigured("rpm").
type Backend interface {
	// Store is the configured store (Postgres or the read-only keys file).
	Store() store.Store
	// Limiter is the configured limiter; Peek reads counts without
	// incrementing, Forget is not needed here (Invalidate does it).
	Limiter() limiter.Limiter
	// CounterKeys names the counters exactly as the handler does.
	CounterKeys() limiter.Keys
	// Invalidate drops the snapshots that scope/id reaches in L2 and in L1
	// of every instance (broadcast), and the local deny entries it touches.
	// ScopeAll flushes everything.
	Invalidate(ctx context.Context, scope store.Scope, id int64) error
	// AdminToken is the bearer token the admin routes require; "" = none.
	AdminToken() string
	// Zones lists the route zones configured on this instance.
	Zones() []Zone
}

// Zone is a route-limit zone configured in some rpm handler.
type Zone struct {
	Name  string
	Scope string // "user" or "key"
	Limit int64
}
