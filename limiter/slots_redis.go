package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// WithLeases configures the leases of the limiter's concurrency slots
// (zero fields take their defaults, see LeaseConfig).
func WithLeases(c LeaseConfig) RedisOption {
	return func(r *Redis) { r.leases.cfg = c.withDefaults() }
}

// CheckAcquire implements Acquirer. The counters and the slot sets are
// decided in one script call, which concurrent checks of the same cluster
// hash slot may share (see batch.go); identical checks are decided as one
// group, each with a lease member of its own.
//
// When the answer is lost (timeout, connection lost) after the check was
// sent, the places may have been taken all the same: they are released in
// the background, and expire after the lease length at the latest.
//
// With reservations on, a request may take a spare place this instance
// holds instead of acquiring in Redis (places.go).
func (r *Redis) CheckAcquire(ctx context.Context, counters []Counter, slots []Slot) (AcquireResult, *Lease, error) {
	return r.acquireBy(ctx, time.Now(), time.Time{}, counters, slots)
}

// acquisition is one CheckAcquire with slots: its check, and the lease it
// becomes when admitted, in one allocation. The set keys of up to
// len(keysBuf) slots (a user's cap and a route's two) need none of their own.
type acquisition struct {
	check   pendingCheck
	lease   Lease
	keysBuf [3]string
}

// acquireBy is CheckAcquire at now ending by deadline (zero: none), like
// checkBy.
func (r *Redis) acquireBy(ctx context.Context, now, deadline time.Time, counters []Counter, slots []Slot) (AcquireResult, *Lease, error) {
	if len(slots) == 0 {
		res, err := r.checkBy(ctx, now, deadline, counters)
		return AcquireResult{Result: res, DeniedSlot: -1}, nil, err
	}
	k := r.leases
	if err := k.start(); err != nil {
		return refusedAcquire(), nil, unavailable("redis acquire", err)
	}
	var pool *placePool
	var spares int64
	if r.reserve != nil {
		if pool = r.reserve.pool(slots, now); pool != nil {
			var place *Lease
			if place, spares = pool.take(now); place != nil {
				return r.acquireSpare(ctx, now, deadline, pool, place, counters)
			}
		}
	}
	a := &acquisition{}
	l := &a.lease
	l.owner, l.member, l.keys = k, k.newMember(), a.keysBuf[:0]
	for _, s := range slots {
		l.keys = append(l.keys, s.Key)
	}
	// The script's argument is a pointer to the member: go-redis writes a
	// *string as the string, and a pointer needs no allocation to become
	// an interface value, unlike the string itself.
	p := &a.check
	p.counters, p.slots, p.member, p.spareWant = counters, slots, &l.member, spares
	start := time.Now()
	if err := r.batcherFor(ctx, deadline, l.keys[0]).do(ctx, deadline, p); err != nil {
		if p.sent.Load() {
			k.abandon(l.member, l.keys, spares)
		}
		return refusedAcquire(), nil, err
	}
	// The lease outlives the check; the request's context must not.
	p.ctx, p.counters, p.slots = nil, nil, nil
	res := AcquireResult{Result: p.res, DeniedSlot: p.deniedSlot, InFlight: p.inFlight}
	if !res.Allowed {
		if r.reserve != nil && res.Denied >= 0 {
			res.RecheckIn = r.reserve.recheck()
		}
		return res, nil, nil
	}
	k.hold(l, start)
	if p.spares > 0 {
		pool.fill(l, p.spares, start, res.InFlight)
	}
	return res, l, nil
}

// acquireSpare admits a request on a spare place of the pool if its
// counters admit it (checkBy, so usually from a reservation of units);
// otherwise the place goes back to the pool.
func (r *Redis) acquireSpare(ctx context.Context, now, deadline time.Time, pool *placePool, place *Lease, counters []Counter) (AcquireResult, *Lease, error) {
	res, err := r.checkBy(ctx, now, deadline, counters)
	if err != nil {
		pool.put(place)
		return refusedAcquire(), nil, err
	}
	if !res.Allowed {
		pool.put(place)
		return AcquireResult{Result: res, DeniedSlot: -1, InFlight: pool.inFlight()}, nil, nil
	}
	l := pool.lease(place)
	return AcquireResult{Result: res, DeniedSlot: -1, InFlight: pool.inFlight()}, l, nil
}

// slotOutcome reads a group's "deniedSlot held1 ... helds spares" from
// the script's reply into its checks, of which the first admitted were
// admitted, and returns the rest of the reply. The spares are the first
// check's.
func slotOutcome(g []*pendingCheck, admitted int, vals []int64, s int) []int64 {
	deniedSlot, held := int(vals[0])-1, vals[1:1+s]
	inFlight := make([]int64, len(g)*s)
	for j, p := range g {
		p.inFlight = inFlight[j*s : (j+1)*s : (j+1)*s]
		add := int64(min(j+1, admitted))
		for i := range s {
			p.inFlight[i] = held[i] + add
		}
		if !p.res.Allowed {
			p.deniedSlot = deniedSlot
		}
	}
	g[0].spares = vals[1+s]
	return vals[2+s:]
}

// sameSlots reports whether two checks take places in the same sets with
// the same limits.
func sameSlots(a, b []Slot) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// peekSlotsScript counts the members of sets whose deadline has not
// passed, without writing. KEYS: the set keys. Returns {held1, ..., heldN}.
var peekSlotsScript = redis.NewScript(`#!lua flags=no-writes
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('ZCOUNT', KEYS[i], '(' .. string.format('%d', ms), '+inf')
end
return out
`)

// PeekSlots implements Acquirer. On a Redis Cluster all keys of one call
// must share a hash slot (the sets of one user do).
func (r *Redis) PeekSlots(ctx context.Context, keys []string) ([]int64, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	held, err := peekSlotsScript.Run(ctx, r.client, keys).Int64Slice()
	if err != nil {
		return nil, unavailable("redis peek slots", err)
	}
	if len(held) != len(keys) {
		return nil, fmt.Errorf("%w: redis peek slots: %d values for %d keys", ErrUnavailable, len(held), len(keys))
	}
	return held, nil
}

// InFlight implements Acquirer.
func (r *Redis) InFlight() int64 { return r.leases.held.Load() }

// Close hands back the reservations' unused units and spare places, then
// stops renewing and releasing leases, after sending the releases still
// queued. Leases held at that point expire within the lease length;
// releasing them later still sends the release, once, without retries.
// CheckAcquire with slots fails after Close; Check is unaffected.
func (r *Redis) Close() error {
	if r.reserve != nil {
		r.reserve.close()
	}
	r.leases.close()
	return nil
}
