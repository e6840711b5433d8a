package gateway

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/store"
)

// Invalidation reaches every instance by two paths: Postgres triggers
// NOTIFY on every data change (admin writes and plain SQL alike), and
// explicit invalidations from the admin API are published on a Redis
// channel.

// Invalidate drops what scope/id reaches from L2 and from L1 of every
// instance, and the local deny entries it touches. ScopeAll flushes
// everything.
func (g *Gateway) Invalidate(ctx context.Context, scope Scope, id int64) error {
	ev := store.Event{Scope: scope, ID: id}
	if scope == ScopeAll {
		ev.ID = 0
	}
	err := g.invalidateHere(ctx, ev, "admin")
	if g.redis != nil {
		if perr := g.redis.Publish(ctx, g.channel, ev.Payload()).Err(); perr != nil && err == nil {
			err = fmt.Errorf("publish invalidation: %w", perr)
		}
	}
	return err
}

func (g *Gateway) counted(ev store.Event, origin string) {
	if g.onInval != nil {
		g.onInval(ev.Scope, ev.ID, origin)
	}
}

// invalidateHere applies an invalidation to this instance's L1 and deny
// cache and to the shared L2.
func (g *Gateway) invalidateHere(ctx context.Context, ev store.Event, origin string) error {
	g.counted(ev, origin)
	// L1 first so this instance stops serving at once, L2 next, then L1
	// again: a concurrent fill may have copied the old L2 entry meanwhile.
	g.forgetLocal(ev)
	var err error
	if ev.Scope == ScopeAll {
		err = g.cache.FlushL2(ctx)
	} else {
		hashes := []string{}
		if ev.KeyHash != "" {
			hashes = append(hashes, ev.KeyHash)
		} else if hs, herr := g.source.KeyHashes(ctx, ev.Scope, ev.ID); herr == nil {
			hashes = hs
		} else {
			err = fmt.Errorf("list keys of %s %d: %w", ev.Scope, ev.ID, herr)
		}
		if ferr := g.cache.ForgetHashes(ctx, hashes...); ferr != nil && err == nil {
			err = ferr
		}
	}
	g.forgetL1(ev)
	return err
}

// forgetLocal drops what ev reaches from this instance's L1 and deny cache.
func (g *Gateway) forgetLocal(ev store.Event) {
	g.forgetL1(ev)
	switch ev.Scope {
	case ScopeAll:
		g.limiter.Forget(0, 0)
	case ScopeUser:
		g.limiter.Forget(ev.ID, 0)
	case ScopeGroup:
		g.limiter.Forget(0, ev.ID)
	}
}

// forgetL1 drops what ev reaches from this instance's L1, in constant time
// for a key, a user or a group (L1 holds up to a million entries; a scan of
// them would take a second per invalidation).
func (g *Gateway) forgetL1(ev store.Event) {
	switch ev.Scope {
	case ScopeKey:
		g.cache.ForgetKey(ev.ID)
	case ScopeUser:
		g.cache.ForgetUser(ev.ID)
	case ScopeGroup:
		g.cache.ForgetGroup(ev.ID)
	default:
		g.cache.ForgetL1(nil)
	}
}

// Run applies the store's notifications and the other instances'
// invalidations until ctx ends. It returns at once; the listeners run in
// their own goroutines.
func (g *Gateway) Run(ctx context.Context) {
	if l, ok := g.source.(store.Listener); ok {
		go l.Listen(ctx, func(ev store.Event) {
			// The filter first: a new key is admitted as soon as its
			// notification arrives, before the cache work below.
			g.feedKeyFilter(ev)
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := g.invalidateHere(ictx, ev, "postgres"); err != nil {
				g.logger.Warn("applying database invalidation", zap.Error(err))
			}
		}, func(gap bool) {
			// Every key created from now on is notified, so a build that
			// starts now misses none; after a gap, one may have been missed.
			g.keyFilter.Rebuild()
			if gap {
				g.flushAfterDatabaseGap(ctx)
			}
		})
	}
	if g.redis != nil {
		go g.subscribe(ctx)
	}
}

// feedKeyFilter applies a database notification to the key filter: a key
// event carries the key's hash (a new key, or a changed one), which is
// added; "all" (a statement that changed too many rows to list, or a
// truncate) and a key event without a hash may have created keys it does
// not name, so the filter is rebuilt.
func (g *Gateway) feedKeyFilter(ev store.Event) {
	if ev.Scope != ScopeKey && ev.Scope != ScopeAll {
		return
	}
	var h [32]byte
	if ev.Scope == ScopeKey && len(ev.KeyHash) == hex.EncodedLen(len(h)) {
		if _, err := hex.Decode(h[:], []byte(ev.KeyHash)); err == nil {
			g.keyFilter.Add(&h)
			return
		}
	}
	g.keyFilter.Rebuild()
}

// flushLocal empties this instance's L1 and deny cache after a listener
// gap, when invalidations may have been missed.
func (g *Gateway) flushLocal(source string) {
	g.logger.Info("invalidation listener reconnected; flushing local caches", zap.String("source", source))
	ev := store.Event{Scope: ScopeAll}
	g.counted(ev, "gap")
	g.forgetLocal(ev)
}

// flushAfterDatabaseGap handles a reconnect of the database listener. The
// notifications sent meanwhile are lost, possibly on every instance at
// once (a Postgres restart), and then nobody deleted the L2 entries they
// made stale: L2 is flushed too, not only this instance's L1. (A gap of the
// Redis subscription needs no L2 flush: the publisher deletes L2 itself.)
func (g *Gateway) flushAfterDatabaseGap(ctx context.Context) {
	g.logger.Info("invalidation listener reconnected; flushing caches", zap.String("source", "postgres"))
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := g.invalidateHere(fctx, store.Event{Scope: ScopeAll}, "gap"); err != nil {
		g.logger.Warn("flushing caches after a database listener gap", zap.Error(err))
	}
}

// subscribe applies invalidations published by other instances. go-redis
// resubscribes on its own after a connection loss; every confirmation
// after the first marks a gap.
func (g *Gateway) subscribe(ctx context.Context) {
	sub := g.redis.Subscribe(ctx, g.channel)
	defer sub.Close()
	subscribed := false
	for {
		msg, err := sub.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Receive reconnects on the next call; don't spin while Redis
			// is down.
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
					g.flushLocal("redis")
				}
				subscribed = true
			}
		case *redis.Message:
			ev, ok := store.ParseEvent(m.Payload)
			if !ok {
				continue
			}
			// The publisher already cleared L2; only local state remains.
			g.counted(ev, "redis")
			g.forgetLocal(ev)
		}
	}
}
