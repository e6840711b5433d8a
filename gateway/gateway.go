// Package gateway is the core of caddy-rpm, free of Caddy and HTTP: it
// owns the rules that decide on a request (the authentication rules,
// which limits apply and whether they admit it), the status of a user's limits, the admin changes with
// the cache invalidation each needs, the invalidation fan-out between
// instances and the view of Redis health the caches share.
//
// The Caddy modules are adapters over it: caddyrpm renders its decisions
// as HTTP answers and admin turns HTTP calls into its methods.
package gateway

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddyrpm/caddy-rpm/keyfilter"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

// Config is what a Gateway is built from.
type Config struct {
	// Source is the store snapshots and admin reads come from. Required.
	Source store.Source
	// Writable is the store admin changes go to; nil for a read-only store
	// (the keys file), whose changes then fail with ErrReadOnly.
	Writable store.Writable
	// Limiter counts requests and takes their concurrency slots. Required.
	Limiter limiter.Acquirer
	// Breaker is the circuit breaker in front of Redis, nil without Redis.
	// Whether it is open is the one view of Redis health: the snapshot
	// cache skips Redis while it is.
	Breaker *limiter.Guarded
	// CounterKeys names the rate-limit counters.
	CounterKeys limiter.Keys
	// FailClosed refuses requests (Unavailable) when the limiter cannot
	// be asked; the default admits them uncounted (AdmittedFailOpen).
	FailClosed bool
	// Cache configures the snapshot cache the gateway builds; its Health
	// is the gateway (see Breaker).
	Cache snapshot.CacheConfig
	// CacheHooks observe the snapshot cache.
	CacheHooks snapshot.CacheHooks
	// Redis, when set, holds the L2 snapshots and carries invalidations to
	// the other instances on Channel.
	Redis redis.UniversalClient
	// Channel is the Redis channel of invalidations.
	Channel string
	// KeyFilter holds the hashes of every key of the store; nil refuses
	// nothing. The gateway keeps it current from the store's notifications.
	KeyFilter *keyfilter.Filter
	// Logger logs invalidation trouble; nil logs nothing.
	Logger *zap.Logger
	// OnStoreError is called when a snapshot load fails; may be nil.
	OnStoreError func()
	// OnInvalidate is called for every invalidation applied, with its scope,
	// id (0 for ScopeAll) and origin ("admin", "postgres", "redis" or
	// "gap"); may be nil.
	OnInvalidate func(scope Scope, id int64, origin string)
}

// Scope names what an invalidation reaches (store.Scope).
type Scope = store.Scope

// The scopes of an invalidation.
const (
	ScopeAll   = store.ScopeAll
	ScopeKey   = store.ScopeKey
	ScopeUser  = store.ScopeUser
	ScopeGroup = store.ScopeGroup
)

// Errors of the admin operations, which adapters map to their answers.
var (
	// ErrNotFound reports an unknown user, group or key.
	ErrNotFound = store.ErrNotFound
	// ErrInvalid reports a change with an invalid value.
	ErrInvalid = store.ErrInvalid
	// ErrReadOnly reports a change to a store that is not writable.
	ErrReadOnly = errors.New("the keys_file store is read-only; configure postgres to change data")
	// ErrCountersUnavailable reports that the limiter could not be asked
	// for a user's counts.
	ErrCountersUnavailable = errors.New("rate limiter unavailable: cannot read the counters")
)

// Gateway is the core of one configuration. Its methods are safe for
// concurrent use.
type Gateway struct {
	source     store.Source
	writable   store.Writable
	limiter    limiter.Acquirer
	breaker    *limiter.Guarded
	cache      *snapshot.Cache
	policy     policy
	failClosed bool
	redis      redis.UniversalClient
	channel    string
	keyFilter  *keyfilter.Filter
	logger     *zap.Logger
	onStoreErr func()
	onInval    func(Scope, int64, string)
	zones      zoneRegistry

	// clears collapses concurrent "clear all" calls of one group.
	clears    singleflight.Group
	clearRuns atomic.Int64
}

// New builds a gateway; it starts nothing (see Run).
func New(cfg Config) (*Gateway, error) {
	if cfg.Source == nil || cfg.Limiter == nil {
		return nil, errors.New("gateway: a source and a limiter are required")
	}
	g := &Gateway{
		source:     cfg.Source,
		writable:   cfg.Writable,
		limiter:    cfg.Limiter,
		breaker:    cfg.Breaker,
		policy:     policy{counterKeys: cfg.CounterKeys},
		failClosed: cfg.FailClosed,
		redis:      cfg.Redis,
		channel:    cfg.Channel,
		keyFilter:  cfg.KeyFilter,
		logger:     cfg.Logger,
		onStoreErr: cfg.OnStoreError,
		onInval:    cfg.OnInvalidate,
	}
	if g.logger == nil {
		g.logger = zap.NewNop()
	}
	cc := cfg.Cache
	cc.Health = g
	if many, ok := cfg.Source.(store.ManySource); ok {
		cc.LoadMany = func(ctx context.Context, keyHashes []string) ([]*snapshot.Snapshot, error) {
			return g.loadSnapshots(ctx, many, keyHashes)
		}
	}
	g.cache = snapshot.NewCache(cc, cfg.Redis, g.loadSnapshot, cfg.CacheHooks)
	return g, nil
}

// RedisDown reports that Redis is known to be unreachable: the breaker is
// open. Without Redis it is false.
func (g *Gateway) RedisDown() bool { return g.breaker != nil && g.breaker.Open() }

// MayBeKey reports whether the key whose SHA-256 is sum may be a key of
// the store; false is certain, so the key is refused without a lookup.
func (g *Gateway) MayBeKey(sum *[32]byte) bool { return g.keyFilter.MayContain(sum) }

// Snapshot returns the auth snapshot of the key whose SHA-256 is sum,
// from the caches or the store; a NotFound snapshot for an unknown key.
// It fails (snapshot.ErrUnavailable) only when the store cannot answer
// and nothing usable is cached.
func (g *Gateway) Snapshot(ctx context.Context, sum *[32]byte) (*snapshot.Snapshot, error) {
	return g.cache.GetSum(ctx, sum)
}

// loadSnapshot reads a snapshot from the store for the cache; an unknown
// key becomes a negative entry.
func (g *Gateway) loadSnapshot(ctx context.Context, keyHash string) (*snapshot.Snapshot, error) {
	s, err := g.source.LoadSnapshot(ctx, keyHash)
	if errors.Is(err, store.ErrNotFound) {
		return snapshot.Negative(), nil
	}
	if err != nil {
		if g.onStoreErr != nil {
			g.onStoreErr()
		}
		return nil, err
	}
	return s, nil
}

// loadSnapshots is loadSnapshot for many keys in one read of a store that
// can: an unknown key becomes a negative entry.
func (g *Gateway) loadSnapshots(ctx context.Context, many store.ManySource, keyHashes []string) ([]*snapshot.Snapshot, error) {
	snaps, err := many.LoadSnapshots(ctx, keyHashes)
	if err != nil {
		if g.onStoreErr != nil {
			g.onStoreErr()
		}
		return nil, err
	}
	for i, s := range snaps {
		if s == nil {
			snaps[i] = snapshot.Negative()
		}
	}
	return snaps, nil
}
