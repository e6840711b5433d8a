package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Concurrency slots
//
// Next to the per-window counters, a request may need slots: places in a
// set of requests in flight that is capped (a user's concurrency limit, a
// route's per-key cap). A slot is taken together with the counters, in the
// same atomic step — the request is admitted only if every counter and
// every slot set has room, and a refused request takes nothing — and it is
// given back by releasing the Lease that the acquisition returned, once,
// when the response is over.

// Slot is one capped set of requests in flight that applies to a request.
type Slot struct {
	// Key names the set. Every set of one user carries the user's hash tag
	// (see Keys.UserSlots) so that it lives in the same Redis Cluster hash
	// slot as the user's counters and one script call can take both.
	Key string
	// Limit is the number of requests the set may hold at once; it is > 0.
	Limit int64
	// UserID (0 = none) lets an invalidation of the user drop the spare
	// places this instance holds in the set (see places.go).
	UserID int64
}

// AcquireResult is the outcome of one CheckAcquire.
type AcquireResult struct {
	// Result holds the counters' outcome. Allowed reports whether every
	// counter and every slot passed; Denied is -1 when a slot refused.
	Result
	// DeniedSlot is the index of the slot set that refused the request, -1
	// if none. When a counter and a slot set are both full, the counter is
	// reported (Denied) and DeniedSlot is -1.
	DeniedSlot int
	// InFlight holds, per slot set, the number of requests it holds: after
	// this request when admitted, before it when refused. It is nil when
	// the deny cache refused the request without asking the backend.
	InFlight []int64
}

// Acquirer is a Limiter that also takes concurrency slots.
type Acquirer interface {
	Limiter
	// CheckAcquire is Check that also takes one place in every slot set,
	// in the same atomic step: the request is admitted only if every
	// counter is below its limit and every set holds fewer than its limit,
	// and then all counters are incremented and all places taken; a
	// refused request changes nothing. A Redis limiter with reservations
	// may instead give the request a place it took earlier, spare, in
	// every set (places.go): counted in the sets all along, so the sets
	// never hold more than their limits either way. The sets of one
	// request must be distinct (a request counts once in a set). An admitted request with
	// slots gets a Lease, which the caller must Release exactly once when
	// the request is over; otherwise the Lease is nil (Release on nil does
	// nothing).
	CheckAcquire(ctx context.Context, counters []Counter, slots []Slot) (AcquireResult, *Lease, error)
	// PeekSlots returns how many requests each slot set holds, without
	// taking a place.
	PeekSlots(ctx context.Context, keys []string) ([]int64, error)
	// InFlight returns the number of leases this instance holds: acquired
	// and not yet released.
	InFlight() int64
}

// errNoSlots is returned by wrappers whose inner limiter takes no slots.
var errNoSlots = errors.New("limiter takes no concurrency slots")

// acquirerOf returns inner as an Acquirer, or an error naming its type.
func acquirerOf(inner Limiter) (Acquirer, error) {
	a, ok := inner.(Acquirer)
	if !ok {
		return nil, fmt.Errorf("%T: %w", inner, errNoSlots)
	}
	return a, nil
}

// refusedAcquire is the result of a check that could not be decided.
func refusedAcquire() AcquireResult {
	return AcquireResult{Result: Result{Denied: -1}, DeniedSlot: -1}
}

// Lease is the places one admitted request holds in its slot sets. Release
// gives them back; it is safe from any goroutine, and only its first call
// does anything.
type Lease struct {
	owner    leaseOwner
	member   string   // unique per acquisition; Redis: the sets' member
	keys     []string // the slot sets' keys
	released atomic.Bool
	// until is when the lease surely expires in Redis unless renewed (unix
	// ns, local clock); a release is not retried past it.
	until atomic.Int64
	// prev and next link the leases a Redis limiter holds (guarded by
	// leaseKeeper.mu): a list costs no hashing and no allocation per lease.
	prev, next *Lease
	// place is, for a lease given from a pool of spare places, the place
	// it uses: a lease of the pool's own, renewed while the pool keeps it.
	place *Lease
}

// leaseOwner gives back the places of a lease (called once per lease).
type leaseOwner interface {
	release(l *Lease)
}

// Release gives back the lease's places. It returns at once: a Redis
// limiter sends the release later, batched with others, and retries it
// until Redis takes it or the lease has expired anyway. Calls after the
// first, and calls on a nil Lease, do nothing.
func (l *Lease) Release() {
	if l == nil || !l.released.CompareAndSwap(false, true) {
		return
	}
	l.owner.release(l)
}

// UserSlots is the set of a user's requests in flight, across all keys.
func (k Keys) UserSlots(userID int64) string { return k.key(userID, ":slots:user") }

// ZoneUserSlots is a route zone's set of a user's requests in flight.
func (k Keys) ZoneUserSlots(zone string, userID int64) string {
	return k.key(userID, ":slots:zone:", zone, ":user")
}

// ZoneKeySlots is a route zone's set of one API key's requests in flight.
func (k Keys) ZoneKeySlots(zone string, userID, keyID int64) string {
	return k.keyWithID(userID, keyID, ":slots:zone:", zone, ":key:")
}
