package gateway

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

// answering is a limiter that answers every Check with res and err, and
// records the counters it was asked about.
type answering struct {
	limiter.Acquirer
	res   limiter.Result
	err   error
	asked []limiter.Counter
}

func (a *answering) Check(_ context.Context, cs []limiter.Counter) (limiter.Result, error) {
	a.asked = cs
	return a.res, a.err
}

// noSource is a source that knows no key; the policy tests need none.
type noSource struct{ store.Source }

func (noSource) LoadSnapshot(context.Context, string) (*snapshot.Snapshot, error) {
	return nil, store.ErrNotFound
}

// newTestGateway is a gateway over lim with counters named under "p:".
func newTestGateway(t *testing.T, lim limiter.Acquirer, failClosed bool) *Gateway {
	t.Helper()
	g, err := New(Config{Source: noSource{}, Limiter: lim, FailClosed: failClosed,
		CounterKeys: limiter.Keys{Prefix: "p:"},
		Cache:       snapshot.CacheConfig{L1Size: 10, L1TTL: time.Minute, NegativeTTL: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// snap is a snapshot of key 3 of user 7; with a group, group 2 "pro".
func snap(override *int64, groupLimit, userLimit int64, withGroup bool) *snapshot.Snapshot {
	s := &snapshot.Snapshot{APIKeyID: 3, UserID: 7,
		User: &snapshot.User{ID: 7, Status: "active", RPMLimit: userLimit, UserGroupRPMOverride: override}}
	if withGroup {
		s.GroupID = testutil.Ptr[int64](2)
		s.Group = &snapshot.Group{ID: 2, Name: "pro", Status: "active", RPMLimit: groupLimit}
	}
	return s
}

// countingSource is a source that knows every key (as user 1's key 1)
// and counts its loads.
type countingSource struct {
	store.Source
	loads atomic.Int64
}

func (s *countingSource) LoadSnapshot(context.Context, string) (*snapshot.Snapshot, error) {
	s.loads.Add(1)
	return &snapshot.Snapshot{Version: snapshot.Version, APIKeyID: 1, UserID: 1, Status: "active"}, nil
}

// KeyHashes reaches no key: L2 has nothing to delete for a user or group.
func (s *countingSource) KeyHashes(context.Context, store.Scope, int64) ([]string, error) {
	return nil, nil
}

// cappedSnap is the snapshot of a key without group of a user with the
// given per-minute limit and concurrency cap.
func cappedSnap(userLimit, concurrency int64) *snapshot.Snapshot {
	s := snap(nil, 0, userLimit, false)
	s.User.Concurrency = concurrency
	return s
}
