package limiter

import (
	"strconv"
	"sync"
	"time"
)

// Spare places
//
// Reservations of units make the counters of a hot user cost no Redis call
// per request; its concurrency cap would still cost one acquisition and
// one release per request. So, with reservations on, an acquisition that
// reaches Redis while every slot set of its request is far from its cap
// may also take s spare places (checkScript): members of every set, named
// after the acquisition's own, with the same lease deadline. This instance
// keeps them in a pool per slot tuple (the same keys with the same limits)
// and gives them to later requests of that tuple without a Redis call:
// such a request checks its counters as a request without slots does
// (usually from its reservation of units) and, if a counter refuses, puts
// the place back. Releasing the request's lease puts its place back too,
// while the pool lives. When the pool is empty, the request acquires in
// Redis as before, asking for spares again.
//
// s follows the rate like a grant of units: about the requests of the
// tuple in the last rateBucket, at most maxSpares, and never more than a
// set's room after the request / reserveShare (decided in the script). A
// set within 2*reserveShare of its cap gets no spares: there every
// acquisition is exact in Redis.
//
// Spare places are leases of the pool's own: renewed with the requests'
// leases, so those of an instance that died expire within the lease length
// like any other. The pool hands them back (batched releases) when the
// tuple has had no request for the reservation TTL (checked every TTL/4),
// at once when Forget drops the user, beyond maxSpares idle places, and on
// Close; a place whose lease may have lapsed (renewals failing) is handed
// back, never given out.

// maxSpares bounds the spare places one acquisition takes and a pool keeps
// idle. Unlike units of a grant, which lapse with their window, a place is
// held until it is handed back, so it stays at what a set's requests bring
// in a rateBucket at 1,280 requests/s.
const maxSpares = 64

// placePools holds the pools of spare places of one Redis limiter.
type placePools struct {
	keeper *leaseKeeper

	mu     sync.RWMutex
	pools  map[string]*placePool
	recent *recentSets // the tuples that may get a pool
	closed bool
}

// placePool is the spare places of one slot tuple.
type placePool struct {
	keeper *leaseKeeper
	slots  []Slot

	mu sync.Mutex
	arrivals
	// idle holds the places no request uses, each a lease of the pool
	// (renewed, not counted by InFlight).
	idle []*Lease
	// sizes holds the sets' sizes after the last acquisition that took
	// spares; less the idle places, they estimate the requests in flight.
	sizes []int64
	// dropped is set once the pool left the map: places that come back
	// are handed back.
	dropped bool
}

func newPlacePools(k *leaseKeeper) *placePools {
	return &placePools{keeper: k, pools: make(map[string]*placePool), recent: newRecentSets()}
}

// lookup returns the pool of a slot tuple with a request at now, made
// (made true) if the tuple had another within rateBucket (counted in its
// rate) and there is room for it; nil if not.
func (ps *placePools) lookup(slots []Slot, now time.Time) (p *placePool, made bool) {
	var buf [128]byte
	return lookupIn(&ps.mu, ps.pools, ps.recent, appendSetKey(buf[:0], slots), now, func() *placePool {
		if ps.closed || len(ps.pools) >= maxReservationSets {
			return nil
		}
		return &placePool{keeper: ps.keeper, slots: append([]Slot(nil), slots...), arrivals: seenOnce(now)}
	})
}

// take counts a request of the tuple at now and returns an idle place for
// it, or nil and the spares an acquisition in Redis should ask for (0 for
// a tuple seen less than twice per rateBucket).
func (p *placePool) take(now time.Time) (*Lease, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.arrive(now)
	for n := len(p.idle); n > 0; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		// Only a place surely still in Redis is given out; the local
		// expiry is a lower bound of the Redis one.
		if now.Before(time.Unix(0, c.until.Load()).Add(-windowMargin)) {
			return c, 0
		}
		p.keeper.handBack(c)
	}
	if want := p.want(maxSpares); want >= 2 {
		return nil, want
	}
	return nil, 0
}

// put makes c an idle place of the pool again, or hands it back when the
// pool was dropped or holds maxSpares idle places already.
func (p *placePool) put(c *Lease) {
	p.mu.Lock()
	if p.dropped || len(p.idle) >= maxSpares {
		p.mu.Unlock()
		p.keeper.handBack(c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// fill adds n spare places, taken with the lease l by an acquisition that
// began at start and left the sets with inFlight requests (l's included).
func (p *placePool) fill(l *Lease, n int64, start time.Time, inFlight []int64) {
	places := make([]Lease, n)
	for j := range places {
		c := &places[j]
		c.owner, c.keys = p.keeper, l.keys
		c.member = l.member + "/" + strconv.Itoa(j+1)
		p.keeper.track(c, start)
	}
	p.mu.Lock()
	if p.dropped {
		p.mu.Unlock()
		for j := range places {
			p.keeper.handBack(&places[j])
		}
		return
	}
	for j := range places {
		p.idle = append(p.idle, &places[j])
	}
	p.sizes = append(p.sizes[:0], inFlight...)
	for i := range p.sizes {
		p.sizes[i] += n
	}
	p.mu.Unlock()
}

// lease returns a lease for a request that took c.
func (p *placePool) lease(c *Lease) *Lease {
	p.keeper.held.Add(1)
	return &Lease{owner: p, member: c.member, keys: c.keys, place: c}
}

// release implements leaseOwner for the leases given from the pool.
func (p *placePool) release(l *Lease) {
	p.keeper.held.Add(-1)
	p.put(l.place)
}

// inFlight estimates the requests in flight per set: the sizes after the
// last acquisition that took spares, less the places idle now. Other
// instances' requests since then are not in it.
func (p *placePool) inFlight() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int64, len(p.slots))
	for i := range out {
		if i < len(p.sizes) {
			out[i] = max(1, p.sizes[i]-int64(len(p.idle)))
		}
	}
	return out
}

// drop takes the pool out of use and hands its idle places back; places
// in use are handed back when their requests end. Called with p.mu held.
func (p *placePool) drop() {
	p.dropped = true
	for i, c := range p.idle {
		p.keeper.handBack(c)
		p.idle[i] = nil
	}
	p.idle = p.idle[:0]
}

// dropWhere drops the pools for which match (called with the pool's mu
// held) is true.
func (ps *placePools) dropWhere(match func(p *placePool) bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for key, p := range ps.pools {
		p.mu.Lock()
		if match(p) {
			delete(ps.pools, key)
			p.drop()
		}
		p.mu.Unlock()
	}
}

// sweep drops the pools whose tuple had no request for idle.
func (ps *placePools) sweep(now time.Time, idle time.Duration) {
	ps.dropWhere(func(p *placePool) bool { return now.Sub(p.last) >= idle })
}

// forget drops the pools with a set of userID (both 0: all), so that a
// lowered cap applies at once. No slot set is a group's.
func (ps *placePools) forget(userID, groupID int64) {
	if userID == 0 && groupID != 0 {
		return
	}
	ps.dropWhere(func(p *placePool) bool {
		if userID == 0 {
			return true
		}
		for _, s := range p.slots {
			if s.UserID == userID {
				return true
			}
		}
		return false
	})
}

// close drops every pool; none is made after it.
func (ps *placePools) close() {
	ps.mu.Lock()
	ps.closed = true
	ps.mu.Unlock()
	ps.forget(0, 0)
}
