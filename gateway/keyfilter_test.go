package gateway

import (
	"context"
	"crypto/sha256"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/keyfilter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// TestFeedKeyFilter: a key notification adds its hash; "all" and a key
// notification without a hash ask for a rebuild.
func TestFeedKeyFilter(t *testing.T) {
	var scans atomic.Int64
	known := sha256.Sum256([]byte("sk-known"))
	f := store.KeySet(keySetFunc(func(ctx context.Context, sized func(int), fn func(*[32]byte)) error {
		scans.Add(1)
		sized(1)
		fn(&known)
		return nil
	}))
	g := &Gateway{keyFilter: newTestFilter(t, f)}

	added := sha256.Sum256([]byte("sk-added"))
	if g.keyFilter.MayContain(&added) {
		t.Skip("a false positive; rerun")
	}
	g.feedKeyFilter(store.Event{Scope: store.ScopeKey, ID: 7, KeyHash: store.HashKey("sk-added")})
	if !g.keyFilter.MayContain(&added) {
		t.Fatal("a key notification's hash was not added")
	}
	for _, ev := range []store.Event{{Scope: store.ScopeAll}, {Scope: store.ScopeKey, ID: 8}} {
		n := scans.Load()
		g.feedKeyFilter(ev)
		deadline := time.Now().Add(5 * time.Second)
		for scans.Load() == n {
			if time.Now().After(deadline) {
				t.Fatalf("%+v did not rebuild the filter", ev)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	n := scans.Load()
	g.feedKeyFilter(store.Event{Scope: store.ScopeUser, ID: 1})
	g.feedKeyFilter(store.Event{Scope: store.ScopeGroup, ID: 1})
	time.Sleep(50 * time.Millisecond)
	if scans.Load() != n {
		t.Fatal("a user or group notification rebuilt the filter")
	}
}

type keySetFunc func(ctx context.Context, sized func(int), fn func(*[32]byte)) error

func (f keySetFunc) ScanKeyHashes(ctx context.Context, sized func(int), fn func(*[32]byte)) error {
	return f(ctx, sized, fn)
}

// newTestFilter returns a running filter of ks, built once.
func newTestFilter(t *testing.T, ks store.KeySet) *keyfilter.Filter {
	t.Helper()
	f := keyfilter.New(keyfilter.Config{Source: ks.ScanKeyHashes, Refresh: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx)
	t.Cleanup(func() { cancel(); <-f.Done() })
	if err := f.Build(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}
