package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// reservingAcquirer is a Redis limiter with reservations (idle TTL ttl)
// and the given leases on c, its scripts loaded, closed on cleanup.
func reservingAcquirer(t *testing.T, c redis.UniversalClient, ttl time.Duration, cfg LeaseConfig) *Redis {
	t.Helper()
	r := NewRedis(c, WithReservations(ttl), WithLeases(cfg))
	t.Cleanup(func() { r.Close() })
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// sparePlaces returns the idle spare places r holds, over all its pools.
func sparePlaces(r *Redis) int {
	ps := r.reserve.places
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	n := 0
	for _, p := range ps.pools {
		p.mu.Lock()
		n += len(p.idle)
		p.mu.Unlock()
	}
	return n
}

// hotAcquire acquires ss (with no counters) n times from each of g
// goroutines, releasing each lease at once, and returns how many were
// admitted.
func hotAcquire(t *testing.T, a Acquirer, g, n int, ss []Slot) int64 {
	t.Helper()
	return parallel(g, n, func(int) bool {
		res, lease, err := a.CheckAcquire(context.Background(), nil, ss)
		if err != nil {
			t.Error(err)
		}
		lease.Release()
		return res.Allowed
	})
}

// takeSpares drives ss hot on r until r holds spare places, and returns
// how many.
func takeSpares(t *testing.T, r *Redis, ss []Slot) int {
	t.Helper()
	for attempt := 0; sparePlaces(r) == 0; attempt++ {
		if attempt == 50 {
			t.Fatal("never held spare places")
		}
		hotAcquire(t, r, 4, 10, ss)
	}
	return sparePlaces(r)
}

// waitHeld waits until key holds n places, as Redis counts them.
func waitHeld(t *testing.T, c redis.UniversalClient, key string, n int64, within time.Duration) {
	t.Helper()
	testutil.WaitFor(t, within, func() error {
		if got := rawHeld(t, c, key); got != n {
			return fmt.Errorf("set holds %d, want %d", got, n)
		}
		return nil
	})
}

// fillSet adds n members to a slot set that expire in a minute: places
// held by other instances.
func fillSet(t *testing.T, c redis.UniversalClient, key string, n int) {
	t.Helper()
	deadline := float64(redisNow(t, c).Add(time.Minute).UnixMilli())
	for i := range n {
		if err := c.ZAdd(context.Background(), key, redis.Z{Score: deadline, Member: "other:" + strconv.Itoa(i)}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// The script takes min(want, (cap - held - 1) / 16) spare places with an
// admitted acquisition: up to the rate far from the cap, none within 32
// of it.
func TestSparePlacesSizedByRoom(t *testing.T) {
	c, keys := singleClient(t)
	for i, tc := range []struct {
		limit       int64
		held        int
		want, spare int64
	}{
		{limit: 8, held: 7, want: 64, spare: 0},
		{limit: 8, held: 0, want: 64, spare: 0},
		{limit: 32, held: 0, want: 64, spare: 1},
		{limit: 48, held: 15, want: 64, spare: 2},
		{limit: 64, held: 0, want: 64, spare: 3},
		{limit: 1 << 20, held: 100, want: 64, spare: 64},
		{limit: 1 << 20, held: 0, want: 5, spare: 5},
	} {
		t.Run(fmt.Sprintf("cap %d held %d want %d", tc.limit, tc.held, tc.want), func(t *testing.T) {
			r := reservingAcquirer(t, c, time.Hour, fastLeases)
			ss := []Slot{{Key: keys.UserSlots(int64(i + 1)), Limit: tc.limit, UserID: int64(i + 1)}}
			fillSet(t, c, ss[0].Key, tc.held)
			p := hotPool(r, ss)
			p.mu.Lock()
			p.bucket, p.prev, p.cur = time.Now(), tc.want, 0
			p.mu.Unlock()
			res, lease := acquire(t, r, nil, ss)
			if !res.Allowed {
				t.Fatalf("refused: %+v", res)
			}
			if got := int64(sparePlaces(r)); got != tc.spare {
				t.Errorf("%d spare places, want %d", got, tc.spare)
			}
			if got, want := rawHeld(t, c, ss[0].Key), int64(tc.held)+1+tc.spare; got != want {
				t.Errorf("set holds %d, want %d", got, want)
			}
			if r.InFlight() != 1 {
				t.Errorf("InFlight %d, want 1: spare places are no requests", r.InFlight())
			}
			lease.Release()
		})
	}
}

// A hot tuple far from its cap costs next to no Redis command once the
// pool holds places: acquisitions take spare places, releases put them
// back.
func TestSparePlacesSteadyStateNoCalls(t *testing.T) {
	c, keys, hook := countedClient(t)
	r := reservingAcquirer(t, c, time.Hour, fastLeases)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	takeSpares(t, r, ss)
	hotAcquire(t, r, 8, 100, ss) // the pool grows to what 8 at once need
	hook.reset()
	const g, n = 8, 1000
	if got := hotAcquire(t, r, g, n, ss); got != g*n {
		t.Fatalf("admitted %d of %d", got, g*n)
	}
	time.Sleep(20 * time.Millisecond) // releases would be sent by now
	if cmds := hook.total(); cmds > g*n/100 {
		t.Fatalf("%d Redis commands for %d acquisitions, want at most 1%%", cmds, g*n)
	}
	if r.InFlight() != 0 {
		t.Fatalf("InFlight %d after every release, want 0", r.InFlight())
	}
	// What Redis holds is what the pool holds: every place is accounted.
	waitHeld(t, c, ss[0].Key, int64(sparePlaces(r)), time.Second)
}

// Two instances taking places at full speed under a cap of 40 (where
// spare places are taken), with more requests than that at once, never
// have more than 40 requests in flight at once; they do refuse, and they
// do admit from spare places.
func TestSparePlacesNeverOverCap(t *testing.T) {
	const limit, g, n = 40, 128, 50
	pair, keys, hook := reservingPair(t, time.Hour)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: limit, UserID: 1}}
	var inFlight, most atomic.Int64
	rngs := make([]*rand.Rand, g)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(uint64(i), 15))
	}
	admitted := parallel(g, n, func(i int) bool {
		res, lease, err := pair[i%2].CheckAcquire(context.Background(), nil, ss)
		if err != nil {
			t.Error(err)
		}
		if res.Allowed {
			now := inFlight.Add(1)
			for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
			}
			time.Sleep(time.Duration(rngs[i].IntN(2000)) * time.Microsecond)
			inFlight.Add(-1)
		}
		lease.Release()
		return res.Allowed
	})
	if m := most.Load(); m > limit {
		t.Fatalf("%d requests in flight at once, cap %d", m, limit)
	}
	if admitted == g*n {
		t.Fatal("every acquisition admitted: the cap was never reached")
	}
	if calls := hook.evalsha.Load(); calls >= admitted {
		t.Fatalf("%d acquisitions in %d script calls: no spare place was used", admitted, calls)
	}
	t.Logf("%d admitted, at most %d at once, %d script calls", admitted, most.Load(), hook.evalsha.Load())
}

// Spare places of a tuple idle for the reservation TTL are handed back.
func TestSparePlacesIdleHandedBack(t *testing.T) {
	c, keys := singleClient(t)
	const ttl = 200 * time.Millisecond
	r := reservingAcquirer(t, c, ttl, fastLeases)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	spares := takeSpares(t, r, ss)
	idle := time.Now()
	if n := rawHeld(t, c, ss[0].Key); n < int64(spares) {
		t.Fatalf("set holds %d with %d spare places", n, spares)
	}
	waitHeld(t, c, ss[0].Key, 0, ttl+500*time.Millisecond)
	if d := time.Since(idle); d < ttl*3/4-50*time.Millisecond {
		t.Fatalf("%d spare places handed back %v after the last request, TTL %v", spares, d, ttl)
	}
	if sparePlaces(r) != 0 {
		t.Fatalf("%d spare places left", sparePlaces(r))
	}
}

// Forget of the user hands the spare places back at once (a group holds
// none), and a lowered cap then applies to the requests in flight.
func TestSparePlacesForget(t *testing.T) {
	c, keys := singleClient(t)
	r := reservingAcquirer(t, c, time.Hour, fastLeases) // no idle hand-back
	ss := []Slot{{Key: keys.UserSlots(7), Limit: 1 << 20, UserID: 7}}
	spares := takeSpares(t, r, ss)
	r.Forget(0, 3)
	r.Forget(8, 0)
	if got := sparePlaces(r); got != spares {
		t.Fatalf("%d spare places after forgetting a group and another user, want %d", got, spares)
	}
	var leases []*Lease
	for range 3 {
		res, l := acquire(t, r, nil, ss)
		if !res.Allowed {
			t.Fatalf("refused: %+v", res)
		}
		leases = append(leases, l)
	}
	r.Forget(7, 0)
	waitHeld(t, c, ss[0].Key, 3, 200*time.Millisecond)
	lowered := []Slot{{Key: ss[0].Key, Limit: 3, UserID: 7}}
	if res, _ := acquire(t, r, nil, lowered); res.Allowed || res.DeniedSlot != 0 {
		t.Fatalf("at the lowered cap of 3 with 3 in flight: %+v", res)
	}
	for _, l := range leases {
		l.Release()
	}
	waitHeld(t, c, ss[0].Key, 0, time.Second)
}

// The spare places of an instance that died (cut off from Redis, so it
// neither renews nor hands back) expire within the lease length; those of
// a live instance are renewed however long they stay idle.
func TestSparePlacesDeadInstance(t *testing.T) {
	c, keys := singleClient(t)
	short := LeaseConfig{Lease: time.Second, Renew: 200 * time.Millisecond, ReleaseDelay: time.Millisecond}
	own := redis.NewClient(&redis.Options{Addr: redistest.SharedAddr, ContextTimeoutEnabled: true})
	dead := reservingAcquirer(t, own, time.Hour, short)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	spares := takeSpares(t, dead, ss)
	waitHeld(t, c, ss[0].Key, int64(spares), time.Second)
	own.Close() // the instance is gone
	killed := time.Now()
	waitHeld(t, c, ss[0].Key, 0, 3*short.Lease)
	if d := time.Since(killed); d > short.Lease+short.Renew+500*time.Millisecond {
		t.Errorf("spare places expired %v after the instance died, lease %v", d, short.Lease)
	}

	alive := reservingAcquirer(t, c, time.Hour, short)
	ss = []Slot{{Key: keys.UserSlots(2), Limit: 1 << 20, UserID: 2}}
	spares = takeSpares(t, alive, ss)
	waitHeld(t, c, ss[0].Key, int64(spares), time.Second)
	time.Sleep(3 * short.Lease)
	if n := rawHeld(t, c, ss[0].Key); n != int64(spares) {
		t.Fatalf("after 3 lease lengths the set holds %d, want the %d renewed spare places", n, spares)
	}
}

// Close hands the spare places back.
func TestSparePlacesClose(t *testing.T) {
	c, keys := singleClient(t)
	r := NewRedis(c, WithReservations(time.Hour), WithLeases(fastLeases))
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	takeSpares(t, r, ss)
	r.Close()
	waitHeld(t, c, ss[0].Key, 0, time.Second)
}

// An acquisition that asked for spare places and never got its answer
// gives back whatever Redis took for it, spares included, without waiting
// for the lease to end.
func TestSparePlacesLostAnswerHandedBack(t *testing.T) {
	c, keys := singleClient(t)
	r := reservingAcquirer(t, c, time.Hour, fastLeases)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	p := hotPool(r, ss)
	p.mu.Lock()
	p.bucket, p.prev, p.cur = time.Now(), maxSpares, 0
	p.mu.Unlock()
	hook := &loseAnswer{}
	c.AddHook(hook)
	if _, lease, err := r.CheckAcquire(context.Background(), nil, ss); !errors.Is(err, ErrUnavailable) || lease != nil || !hook.lost.Load() {
		t.Fatalf("CheckAcquire with its answer lost: %v, %v; want ErrUnavailable", lease, err)
	}
	waitHeld(t, c, ss[0].Key, 0, time.Second)
	if n := sparePlaces(r); n != 0 {
		t.Fatalf("%d spare places from a lost answer", n)
	}
}

// A spare place whose lease may have lapsed (its renewals failed) is not
// given out: the request acquires in Redis, and the place leaves the pool
// and the leases renewed.
func TestSparePlacesLapsedNotGiven(t *testing.T) {
	c, keys, hook := countedClient(t)
	r := reservingAcquirer(t, c, time.Hour, fastLeases)
	ss := []Slot{{Key: keys.UserSlots(1), Limit: 1 << 20, UserID: 1}}
	takeSpares(t, r, ss)
	p := hotPool(r, ss)
	lapsed := map[*Lease]bool{}
	p.mu.Lock()
	for _, l := range p.idle {
		l.until.Store(time.Now().Add(-time.Millisecond).UnixNano())
		lapsed[l] = true
	}
	p.mu.Unlock()
	hook.reset()
	res, lease := acquire(t, r, nil, ss)
	if !res.Allowed || hook.evalsha.Load() != 1 || lease.place != nil {
		t.Fatalf("%+v after %d script calls, from a spare place %v; want admitted in Redis", res, hook.evalsha.Load(), lease.place != nil)
	}
	lease.Release()
	k := r.leases
	k.mu.Lock()
	defer k.mu.Unlock()
	for l := k.leases; l != nil; l = l.next {
		if lapsed[l] {
			t.Fatal("a lapsed spare place is still renewed")
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.idle {
		if lapsed[l] {
			t.Fatal("a lapsed spare place is still in the pool")
		}
	}
}
