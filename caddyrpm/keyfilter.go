package caddyrpm

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddyrpm/caddy-rpm/keyfilter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// The key filter holds the SHA-256 of every key of the store, so a request
// with an unknown key is refused at once: no L1 entry, no Redis call, no
// query. For Postgres it is built by one streaming query after the
// invalidation listener starts (and after every reconnect of it), kept
// current by the key notifications the triggers send on insert (fed by the
// gateway, which listens), and rebuilt
// every few minutes; it is shared across config reloads. Until its first
// build succeeds it refuses nothing.

// provisionKeyFilter creates the filter of this configuration's store.
func (a *App) provisionKeyFilter(ctx caddy.Context) error {
	ks, ok := a.source.(store.KeySet)
	if !ok {
		return nil // no filter: every key takes the usual path
	}
	m := a.metrics
	cfg := keyfilter.Config{
		Source: ks.ScanKeyHashes,
		// The filter may outlive this configuration (see sharedLogger).
		Logger: sharedLogger("rpm.keyfilter"),
		OnBuild: func(err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			m.keyFilterBuilds.WithLabelValues(result).Inc()
		},
	}
	if _, listens := a.source.(store.Listener); !listens {
		// The keys file: read in memory and reread on every config load, so
		// it is built here, once, and never goes stale.
		f := keyfilter.New(cfg)
		if err := f.Build(ctx); err != nil {
			return fmt.Errorf("rpm: %w", err)
		}
		a.keyFilter = f
		return nil
	}
	f, err := share(a, "keyfilter|"+a.Postgres, func() (*keyfilter.Filter, func(), error) {
		f := keyfilter.New(cfg)
		fctx, cancel := context.WithCancel(context.Background())
		f.Start(fctx)
		return f, func() { cancel(); <-f.Done() }, nil
	})
	if err != nil {
		return fmt.Errorf("rpm: key filter: %w", err)
	}
	a.keyFilter = f
	return nil
}
