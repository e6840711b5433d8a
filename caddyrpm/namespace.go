package caddyrpm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// Redis layout
//
// Everything the app keeps in Redis lives under one prefix per store,
// RedisPrefix(key_prefix, store id):
//
//	<prefix>c:counts...       rate-limit counters (limiter.Keys, limiter.CounterPlace)
//	<prefix>c:{u<id>}:slots:… concurrency slot sets
//	<prefix>snap:<sha256>     L2 snapshots and negative entries
//	<prefix>invalidate        the invalidation channel
//
// The store id (store.Identifier) is the same on every instance of one
// store and differs between stores, so deployments on other databases,
// schemas or keys file contents never share a counter, a cached snapshot
// or an invalidation, while the instances of one deployment share exactly.
// Without Redis nothing is shared, and the prefix is key_prefix alone.

// RedisPrefix returns the prefix of every Redis key and channel of the
// deployment whose key_prefix is keyPrefix and whose store identity is
// storeID (store.Identifier). It is the only place that composes it.
func RedisPrefix(keyPrefix, storeID string) string {
	return keyPrefix + storeID + ":"
}

// storeIDTimeout bounds the identity query at provision time, so a
// database that does not answer fails the start instead of hanging it.
const storeIDTimeout = 5 * time.Second

// provisionNamespace sets the prefix of this app's Redis keys and channel.
// It runs after the store and Redis are provisioned.
func (a *App) provisionNamespace(ctx context.Context) error {
	a.prefix = a.RedisKeyPrefix
	if a.redis != nil {
		id, err := a.storeID(ctx)
		if err != nil {
			return err
		}
		a.prefix = RedisPrefix(a.RedisKeyPrefix, id)
		a.logger.Info("redis keys and channel of this store", zap.String("prefix", a.prefix))
	}
	a.counterKeys = limiter.Keys{Prefix: a.prefix + "c:"}
	return nil
}

// storeID returns the store's identity. The Postgres one needs a query; its
// result is shared like the pool, so a reload with the same DSN reuses it
// rather than querying again.
func (a *App) storeID(ctx context.Context) (string, error) {
	switch s := a.source.(type) {
	case *store.Postgres:
		id, err := share(a, "pg-id|"+a.Postgres, func() (string, func(), error) {
			qctx, cancel := context.WithTimeout(ctx, storeIDTimeout)
			defer cancel()
			id, err := s.StoreID(qctx)
			return id, nil, err
		})
		if err != nil {
			return "", fmt.Errorf("rpm: postgres must be reachable at start when redis is configured "+
				"(the store identity names the redis keys): %w", err)
		}
		return id, nil
	case store.Identifier:
		return s.StoreID(ctx)
	}
	return "", errors.New("rpm: the store has no identity to name its redis keys")
}

// checkKeyPrefix allows key prefixes of a safe alphabet: no glob characters
// (the prefix is part of a SCAN pattern), no braces (a hash tag in the
// prefix would put every user in one Redis Cluster slot), no spaces.
func checkKeyPrefix(p string) error {
	if len(p) > 64 {
		return fmt.Errorf("key_prefix must be at most 64 characters, not %d", len(p))
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == ':', r == '.', r == '_', r == '-', r == '/':
		default:
			return fmt.Errorf("key_prefix %q may contain only letters, digits and : . _ - /, not %q", p, r)
		}
	}
	return nil
}
