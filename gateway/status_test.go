package gateway

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

// statusSource answers UserRPM with one user; the rest of the store is
// not needed by Status.
type statusSource struct {
	store.Source
	user store.UserRPM
}

func (s statusSource) UserRPM(_ context.Context, uid int64) (*store.UserRPM, error) {
	if uid != s.user.UserID {
		return nil, store.ErrNotFound
	}
	u := s.user
	u.Groups = append([]store.UserGroup(nil), u.Groups...)
	return &u, nil
}

// TestStatusReserved: for a hot user, rpm-status reports as reserved the
// units this instance holds unused — on the user's counter, the group's
// and the per-user zone's — and the counts Redis reports are exactly the
// admitted requests plus those units. With reservations off nothing is
// reserved and the counts are the admitted requests.
func TestStatusReserved(t *testing.T) {
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "on", false: "off"}[on]
		t.Run(name, func(t *testing.T) {
			rdb, prefix := redistest.Shared(t)
			var opts []limiter.RedisOption
			if on {
				opts = append(opts, limiter.WithReservations(time.Hour)) // no idle hand-back
			}
			counting := limiter.NewRedis(rdb, opts...)
			t.Cleanup(func() { _ = counting.Close() })
			const limit = 100000
			g, err := New(Config{
				Source: statusSource{user: store.UserRPM{UserID: 7, RPMLimit: limit,
					Groups: []store.UserGroup{{GroupID: 2, Name: "pro", RPMLimit: limit}}}},
				Limiter:     limiter.NewDenyCache(limiter.NewGuarded(counting, time.Second, nil), nil),
				CounterKeys: limiter.Keys{Prefix: prefix},
				Cache:       snapshot.CacheConfig{L1Size: 10, L1TTL: time.Minute, NegativeTTL: time.Minute},
			})
			if err != nil {
				t.Fatal(err)
			}
			route := []RouteLimit{{"img", LimitRouteUser, limit}, {"img", LimitRouteKey, limit}}
			g.DeclareRoute(route)
			redistest.WaitForWindow(t, rdb, 10*time.Second)

			// Bursts of concurrent requests, until this instance holds
			// units (with reservations on; they stay, as the TTL is long)
			// or for a few rounds (off).
			s := snap(nil, limit, limit, true)
			var admitted atomic.Int64
			userKey := limiter.Keys{Prefix: prefix}.User(7)
			for round := 0; round < 5 || (on && counting.Reserved([]string{userKey})[0] == 0); round++ {
				if round == 50 {
					t.Fatal("the hot user never held reserved units")
				}
				err := testutil.Concurrently(8, 5, func() error {
					if d := g.Check(context.Background(), s, route); d.Outcome != Admitted {
						return fmt.Errorf("decision %+v", d)
					}
					admitted.Add(1)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}

			// A grant fetched ahead by the last requests may still be on
			// its way: Redis counts it a round trip before Reserved does.
			n := admitted.Load()
			var reserved int64
			testutil.WaitFor(t, 2*time.Second, func() error {
				st, err := g.Status(context.Background(), 7)
				if err != nil {
					return err
				}
				if len(st.PerGroup) != 1 || len(st.PerZone) != 2 || st.PerZone[0].Reserved == nil || st.PerZone[1].Reserved != nil {
					t.Fatalf("status %+v: want one group, the zone per user with reserved, per key without", st)
				}
				reserved = st.UserRPMReserved
				if (reserved > 0) != on {
					t.Fatalf("reserved %d with reservations %s", reserved, name)
				}
				for what, c := range map[string][2]int64{
					"user":          {st.UserRPMUsed, st.UserRPMReserved},
					"group":         {st.PerGroup[0].Used, st.PerGroup[0].Reserved},
					"per-user zone": {*st.PerZone[0].Used, *st.PerZone[0].Reserved},
				} {
					if c[1] != reserved || c[0] != n+reserved {
						return fmt.Errorf("%s: used %d, reserved %d; want %d admitted + %d reserved (one counter set)", what, c[0], c[1], n, reserved)
					}
				}
				return nil
			})
			t.Logf("reservations %s: %d admitted, %d reserved", name, n, reserved)
		})
	}
}
