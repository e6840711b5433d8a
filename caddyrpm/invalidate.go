package caddyrpm

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

// Invalidation reaches every instance by two paths: Postgres triggers NOTIFY
// on every data change (admin writes and plain SQL alike), and explicit
// flushes from the admin API are published on a Redis channel.

func (a *App) channel() string { return a.prefix + "invalidate" }

// Invalidate drops what scope/id reaches from L2 and from L1 of every
// instance, and the local deny entries it touches. It implements the
// admin.Backend method.
func (a *App) Invalidate(ctx context.Context, scope store.Scope, id int64) error {
	err := a.invalidateHere(ctx, store.Event{Scope: scope, ID: id}, "admin")
	if a.redis != nil {
		msg := string(scope) // the payload format of store.ParseEvent
		if scope != store.ScopeAll {
			msg += ":" + strconv.FormatInt(id, 10)
		}
		if perr := a.redis.Publish(ctx, a.channel(), msg).Err(); perr != nil && err == nil {
			err = fmt.Errorf("publish invalidation: %w", perr)
		}
	}
	return err
}

// invalidateHere applies an invalidation to this instance's L1 and deny
// cache and to the shared L2.
func (a *App) invalidateHere(ctx context.Context, ev store.Event, origin string) error {
	a.metrics.invalidations.WithLabelValues(string(ev.Scope), origin).Inc()
	// L1 first so this instance stops serving at once, L2 next, then L1
	// again: a concurrent fill may have copied the old L2 entry meanwhile.
	a.forgetLocal(ev)
	var err error
	if ev.Scope == store.ScopeAll {
		err = a.cache.FlushL2(ctx)
	} else {
		hashes := []string{}
		if ev.KeyHash != "" {
			hashes = append(hashes, ev.KeyHash)
		} else if hs, herr := a.store.KeyHashes(ctx, ev.Scope, ev.ID); herr == nil {
			hashes = hs
		} else {
			err = fmt.Errorf("list keys of %s %d: %w", ev.Scope, ev.ID, herr)
		}
		if ferr := a.cache.ForgetHashes(ctx, hashes...); ferr != nil && err == nil {
			err = ferr
		}
	}
	a.cache.ForgetL1(matcher(ev))
	return err
}

// forgetLocal drops what ev reaches from this instance's L1 and deny cache.
func (a *App) forgetLocal(ev store.Event) {
	a.cache.ForgetL1(matcher(ev))
	a.forgetLimits(ev)
}

func (a *App) forgetLimits(ev store.Event) {
	switch ev.Scope {
	case store.ScopeAll:
		a.limiter.Forget(0, 0)
	case store.ScopeUser:
		a.limiter.Forget(ev.ID, 0)
	case store.ScopeGroup:
		a.limiter.Forget(0, ev.ID)
	}
}

func matcher(ev store.Event) func(*snapshot.Snapshot) bool {
	switch ev.Scope {
	case store.ScopeKey:
		return snapshot.ForKey(ev.ID)
	case store.ScopeUser:
		return snapshot.ForUser(ev.ID)
	case store.ScopeGroup:
		return snapshot.ForGroup(ev.ID)
	}
	return nil
}

// flushLocal empties this instance's L1 and deny cache after a listener
// gap, when invalidations may have been missed.
func (a *App) flushLocal(source string) {
	a.logger.Info("invalidation listener reconnected; flushing local caches", zap.String("source", source))
	a.metrics.invalidations.WithLabelValues(string(store.ScopeAll), "gap").Inc()
	a.forgetLocal(store.Event{Scope: store.ScopeAll})
}

// flushAfterDatabaseGap handles a reconnect of the database listener. The
// notifications sent meanwhile are lost, possibly on every instance at once
// (a Postgres restart), and then nobody deleted the L2 entries they made
// stale: L2 is flushed too, not only this instance's L1. (A gap of the Redis
// subscription needs no L2 flush: the publisher deletes L2 itself.)
func (a *App) flushAfterDatabaseGap(ctx context.Context) {
	a.logger.Info("invalidation listener reconnected; flushing caches", zap.String("source", "postgres"))
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.invalidateHere(fctx, store.Event{Scope: store.ScopeAll}, "gap"); err != nil {
		a.logger.Warn("flushing caches after a database listener gap", zap.Error(err))
	}
}

func (a *App) startInvalidation(ctx context.Context) {
	if l, ok := a.store.(store.Listener); ok {
		go l.Listen(ctx, func(ev store.Event) {
			// The filter first: a new key is admitted as soon as its
			// notification arrives, before the cache work below.
			a.feedKeyFilter(ev)
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := a.invalidateHere(ictx, ev, "postgres"); err != nil {
				a.logger.Warn("applying database invalidation", zap.Error(err))
			}
		}, func(gap bool) {
			// Every key created from now on is notified, so a build that
			// starts now misses none; after a gap, one may have been missed.
			a.keyFilter.Rebuild()
			if gap {
				a.flushAfterDatabaseGap(ctx)
			}
		})
	}
	if a.redis != nil {
		go a.subscribe(ctx)
	}
}

// subscribe applies invalidations published by other instances. go-redis
// resubscribes on its own after a connection loss; every confirmation after
// the first marks a gap.
func (a *App) subscribe(ctx context.Context) {
	sub := a.redis.Subscribe(ctx, a.channel())
	defer sub.Close()
	subscribed := false
	for {
		msg, err := sub.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Receive reconnects on the next call; don't spin while Redis is down.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				if subscribed {
					a.flushLocal("redis")
				}
				subscribed = true
			}
		case *redis.Message:
			ev, ok := store.ParseEvent(m.Payload)
			if !ok {
				continue
			}
			// The publisher already cleared L2; only local state remains.
			a.metrics.invalidations.WithLabelValues(string(ev.Scope), "redis").Inc()
			a.forgetLocal(ev)
		}
	}
}
