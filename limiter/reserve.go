package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Reservations
//
// A hot user pays one Redis round trip per request even when every one of
// its counters is far from its limit. With reservations, a check that
// reaches Redis for such a counter set may take a grant of g units
// (reserveScript): every counter is incremented by g at once, the request
// uses one unit, and this instance admits up to g-1 further requests of
// exactly the same counter set (same keys, same limits) locally. Units are
// counted in Redis before they are used, so the admitted total never
// exceeds a limit, across any number of instances.
//
// g follows the rate: about the requests this instance saw for the set in
// the last rateBucket, at most maxGrant, and never more than a counter's
// room / reserveShare (decided in the script, from the counts of that
// instant). A set seen fewer than minGrant times per rateBucket never
// reserves, and near a limit every request is checked in Redis as without
// reservations.
//
// A request that leaves a grant half used starts the next reserving check
// in the background (refillAhead), whose grant joins the units left: the
// set's later requests need not wait for a refill when the units run out.
//
// Units not used are handed back (handBackScript, one call per batch) when
// the set has had no request for the reservation TTL (checked every TTL/4,
// so after 3/4 of the TTL to the TTL), and at once when
// Forget drops the set's user or group; at the end of the window they
// lapse with the counters. A reservation is used only while the window it
// was granted in surely lasts: until the send time of its check plus the
// time left that Redis reported, which is never later than Redis's own
// window end.
//
// The cost of that: while another instance holds units it does not use,
// Redis counts them, so a request may be refused although fewer requests
// than the limit were admitted — for at most the TTL plus a round trip
// after that instance's last request for the set, plus TTL/4 where the
// deny cache remembered the refusal: refusals tell it to re-check after
// TTL/4 (Result.RecheckIn) instead of remembering the counter until the
// end of the window.
//
// The same goroutine sweeps the idle pools of spare concurrency places
// (places.go), which follow the same rules for places in slot sets.

// DefaultReservationTTL is the idle time after which a reservation's
// unused units are handed back.
const DefaultReservationTTL = 250 * time.Millisecond

const (
	// maxGrant bounds the units of one grant: 256 is what a set brings in
	// a rateBucket at 5,120 requests/s on one instance. A hot set costs a
	// Redis call per grant: with grants of 64, about 1 % of an admitted
	// request's CPU (Caddy's and Redis's) at 10,000 requests/s. Near a
	// limit, room / reserveShare bounds a grant whatever maxGrant is.
	maxGrant = 256
	// minGrant is the smallest grant asked for. A grant is a script call
	// of its own, while checks share calls under load (batch.go): about 7
	// to a call in the users scenario of bench/run.sh. A smaller grant
	// saves fewer checks than its call costs: with 250 users at about 22
	// requests/s each, grants of about 2 units took 0.45 calls per request,
	// and plain checks 0.14 (bench/HISTORY.md). At low load, where
	// checks do not share calls, a set below minGrant pays a call per
	// request, which such a load affords.
	minGrant = 8
	// rateBucket is the period whose request count sizes a grant.
	rateBucket = 50 * time.Millisecond
	// maxReservationSets bounds the counter sets tracked; a set beyond it
	// is checked in Redis per request.
	maxReservationSets = 1 << 16
	// windowMargin is taken off the window end a grant may be used until:
	// Redis reports the time left rounded to the millisecond, and the two
	// clocks may run at slightly different rates.
	windowMargin = 2 * time.Millisecond
)

// WithReservations turns reservations on with the given idle TTL (see
// DefaultReservationTTL); 0 or less leaves them off, the default of
// NewRedis. Checks with concurrency slots use them too: their counters
// like other checks, their slots through spare places (places.go).
func WithReservations(ttl time.Duration) RedisOption {
	return func(r *Redis) {
		if ttl > 0 {
			r.reserve = newReservations(r, ttl)
		}
	}
}

// reservations holds the reservations of one Redis limiter, per counter
// set, and the goroutine that hands idle ones back.
type reservations struct {
	r   *Redis
	ttl time.Duration

	mu      sync.RWMutex
	sets    map[string]*reservation
	recent  *recentSets // the sets that may get an entry
	pending []handBack  // to send
	started bool
	closed  bool

	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	granted, local, handedBack, unanswered, handBackErrors atomic.Uint64

	// places holds the spare concurrency places, kept and handed back
	// alongside the units (places.go).
	places *placePools
}

// reservation is the state of one counter set: its current grant, if any,
// and the request rate that sizes the next one.
type reservation struct {
	counters []Counter

	mu sync.Mutex
	// units is what is left of the grant to admit locally.
	units int64
	// base holds the counts after the granting request; used counts the
	// local admissions since.
	base []int64
	used int64
	// window is the Redis window number of the grant; end the local time
	// before which that window surely lasts.
	window int64
	end    time.Time
	arrivals
	// lastGrant is the size of the last grant (1: none was possible, 0:
	// refused).
	lastGrant int64
	// refill is the reserving check in flight, nil if none.
	refill *refill
	// dropped is set once the set left the map (idle or forgotten): a
	// grant that arrives later is handed back at once.
	dropped bool
}

// refill is a reserving check in flight, which other requests of the set
// may wait for instead of asking Redis themselves.
type refill struct {
	done    chan struct{}
	want    int64
	waiters int64 // guarded by the reservation's mu
	err     error // set before done is closed
	// ahead is set for a refill that no request asked for (refillAhead).
	ahead bool
}

// handBack is units of one grant to give back.
type handBack struct {
	keys   []string
	window int64
	units  int64
	until  time.Time // the window's end: dropped after it
}

func newReservations(r *Redis, ttl time.Duration) *reservations {
	ctx, cancel := context.WithCancel(context.Background())
	return &reservations{
		r: r, ttl: ttl,
		sets: make(map[string]*reservation), recent: newRecentSets(),
		kick: make(chan struct{}, 1),
		ctx:  ctx, cancel: cancel,
		places: newPlacePools(r.leases),
	}
}

// recheck is how long a refusal may be remembered while units reserved by
// any instance may still come back (see Result.RecheckIn).
func (rs *reservations) recheck() time.Duration { return rs.sweepEvery() }

// sweepEvery is how often idle reservations are looked for.
func (rs *reservations) sweepEvery() time.Duration { return rs.ttl / 4 }

// check decides a request without slots, sent at now: from the set's
// reservation if it has units left (a Local result), otherwise in Redis,
// reserving when the rate is high.
func (rs *reservations) check(ctx context.Context, now, deadline time.Time, counters []Counter) (Result, error) {
	e := rs.lookup(counters, now)
	if e == nil {
		return rs.plain(ctx, deadline, counters)
	}
	e.mu.Lock()
	e.arrive(now)
	if res, ok := e.take(now); ok {
		ahead := e.refillAhead()
		e.mu.Unlock()
		rs.local.Add(1)
		if ahead != nil {
			rs.fetchAhead(e, ahead, now, deadline)
		}
		res.Local = true
		return res, nil
	}
	if f := e.refill; f != nil && e.lastGrant > 1 && f.waiters < f.want-1 {
		// A grant like the last one is on its way: wait for it as for a
		// check of our own. The reserving check (a request's own or one
		// ahead) started earlier, so its deadline (the same Guarded
		// timeout) comes first.
		f.waiters++
		e.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return Result{Denied: -1}, unavailable("redis check", ctx.Err())
		}
		if f.err != nil {
			return Result{Denied: -1}, f.err
		}
		e.mu.Lock()
		res, ok := e.take(time.Now())
		e.mu.Unlock()
		if ok {
			rs.local.Add(1)
			return res, nil
		}
		return rs.plain(ctx, deadline, counters)
	}
	want := e.want(maxGrant)
	if want < minGrant || e.refill != nil {
		e.mu.Unlock()
		return rs.plain(ctx, deadline, counters)
	}
	f := &refill{done: make(chan struct{}), want: want}
	e.refill = f
	e.mu.Unlock()

	gr, err := rs.reserve(ctx, deadline, counters, want)
	rs.settle(e, f, gr, now, err)
	if err != nil {
		return Result{Denied: -1}, err
	}
	res := Result{Denied: -1, ResetIn: gr.resetIn, Counts: gr.before}
	if gr.units == 0 {
		res.Denied = gr.denied
		res.RecheckIn = rs.recheck()
		return res, nil
	}
	res.Allowed = true
	for i := range res.Counts {
		res.Counts[i]++
	}
	return res, nil
}

// refillAhead starts the set's next reserving check, if it is time to: a
// request has just taken a unit of a grant that is down to half of its
// size, and no refill is out. Its grant joins what is left, so that while
// it is out the set's requests go on locally instead of all waiting for it
// once the units run out. Called with e.mu held.
func (e *reservation) refillAhead() *refill {
	if e.refill != nil || e.dropped || e.lastGrant < 2 || 2*e.units > e.lastGrant {
		return nil
	}
	want := e.want(maxGrant)
	if want < minGrant {
		return nil
	}
	e.refill = &refill{done: make(chan struct{}), want: want, ahead: true}
	return e.refill
}

// fetchAhead runs refill f, started at now by refillAhead, in a goroutine
// of its own: no request waits for it unless the units run out first. It
// ends by the deadline of the request that started it, so that a request
// waiting for it is not held past its own (the lease timeout without
// one), and close waits for it, so that its units are handed back with
// the others.
func (rs *reservations) fetchAhead(e *reservation, f *refill, now, deadline time.Time) {
	if deadline.IsZero() {
		deadline = now.Add(rs.r.leases.cfg.Timeout)
	}
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		rs.settle(e, f, grant{}, now, errClosed)
		return
	}
	rs.wg.Add(1)
	rs.mu.Unlock()
	go func() {
		defer rs.wg.Done()
		gr, err := rs.reserve(context.Background(), deadline, e.counters, f.want)
		rs.settle(e, f, gr, now, err)
	}()
}

// settle records the answer of refill f, sent at now, in the set's state
// and wakes those waiting for it.
func (rs *reservations) settle(e *reservation, f *refill, gr grant, now time.Time, err error) {
	// The request of a refill of its own uses a unit of the grant; one
	// ahead has none.
	taken := int64(1)
	if f.ahead {
		taken = 0
	}
	e.mu.Lock()
	e.refill = nil
	f.err = err
	var back *handBack
	switch {
	case err != nil:
		if f.ahead {
			// Nobody asked for it: until a request's own refill succeeds,
			// no other goes ahead and nobody waits.
			e.lastGrant = 1
		}
	case gr.units <= taken:
		// Nothing to admit locally. After a refusal or a grant of 1
		// nobody waits for the next refill.
		e.lastGrant = gr.units
	default:
		e.lastGrant = gr.units
		rs.granted.Add(1)
		if e.dropped {
			back = &handBack{keys: keysOf(e.counters), window: gr.window, units: gr.units - taken, until: now.Add(gr.resetIn)}
		} else {
			e.add(gr, taken, now)
		}
	}
	e.mu.Unlock()
	close(f.done)
	if back != nil {
		rs.enqueue(*back)
	}
}

// add makes grant gr, sent at now, of which the request used taken units,
// the set's reservation. Units left of the last grant stay when both are
// of the same window; the counts of the local admissions to come continue
// from Redis's counts less the units this instance holds unused. Called
// with e.mu held.
func (e *reservation) add(gr grant, taken int64, now time.Time) {
	held := int64(0)
	if gr.window == e.window && now.Before(e.end) {
		held = e.units
	}
	e.units, e.used, e.window, e.end = held+gr.units-taken, 0, gr.window, now.Add(gr.resetIn-windowMargin)
	e.base = e.base[:0]
	for _, c := range gr.before {
		e.base = append(e.base, c+taken-held)
	}
}

// plain is the check without reservation (batch.go).
func (rs *reservations) plain(ctx context.Context, deadline time.Time, counters []Counter) (Result, error) {
	res, err := rs.r.batcherFor(ctx, deadline, counters[0].Key).check(ctx, deadline, counters)
	if err == nil && !res.Allowed {
		res.RecheckIn = rs.recheck()
	}
	return res, err
}

// grant is reserveScript's answer.
type grant struct {
	// units is g, the units the counters were incremented by; 0 when
	// refused.
	units int64
	// denied is the index of the first full counter, -1 if none.
	denied int
	// before holds the counts before the grant.
	before []int64
	// window is the Redis window number, resetIn the time left in it.
	window  int64
	resetIn time.Duration
}

// reserve runs reserveScript for want units. Others may wait for the
// call, so the caller leaving does not end it: it ends by the caller's
// deadline (deadline, or ctx's if earlier), as a shared batch call does
// (batch.go).
func (rs *reservations) reserve(ctx context.Context, deadline time.Time, counters []Counter, want int64) (grant, error) {
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	ctx, cancel := withDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	m := len(counters)
	layout := counterLayout{cluster: rs.r.cluster}
	places := make([]place, m)
	for i, c := range counters {
		places[i] = layout.add(c.Key)
	}
	args := make([]any, 0, 4+4*m)
	args = append(args, rs.r.slack, want, reserveShare)
	args = layout.appendArgs(args)
	for i, c := range counters {
		args = append(args, layout.index(places[i]), c.Limit)
	}
	reply, err := reserveScript.Run(ctx, rs.r.client, layout.hashes, args...).Text()
	if rs.r.onCall != nil {
		rs.r.onCall(1)
	}
	var vals []int64
	if err == nil {
		vals, err = parseInts(reply, 4+m)
	}
	if err != nil {
		rs.unanswered.Add(1)
		return grant{}, unavailable("redis reserve", err)
	}
	window, resetIn := redisClock(vals[0], vals[1])
	return grant{units: vals[2], denied: int(vals[3]) - 1, before: vals[4:], window: window, resetIn: resetIn}, nil
}

// take admits one request from the grant, if it has units left and its
// window surely lasts.
func (e *reservation) take(now time.Time) (Result, bool) {
	if e.units <= 0 || !now.Before(e.end) {
		return Result{}, false
	}
	e.units--
	e.used++
	counts := make([]int64, len(e.base))
	for i, c := range e.base {
		counts[i] = c + e.used
	}
	return Result{Allowed: true, Denied: -1, Counts: counts, ResetIn: e.end.Sub(now)}, true
}

// drop empties the set's grant and returns its unused units to hand back,
// if any. Called with e.mu held, once the set has left the map.
func (e *reservation) drop(now time.Time) (handBack, bool) {
	e.dropped = true
	units := e.units
	e.units = 0
	if units <= 0 || !now.Before(e.end) {
		return handBack{}, false
	}
	return handBack{keys: keysOf(e.counters), window: e.window, units: units, until: e.end}, true
}

// lookup returns the reservation of a set with a request at now, made if
// the set had another within rateBucket (counted in its rate) and there
// is room for it; nil if not.
func (rs *reservations) lookup(counters []Counter, now time.Time) *reservation {
	var buf [128]byte
	e, _ := lookupIn(&rs.mu, rs.sets, rs.recent, appendSetKey(buf[:0], counters), now, func() *reservation {
		if rs.closed || len(rs.sets) >= maxReservationSets {
			return nil
		}
		rs.startLocked()
		return &reservation{counters: append([]Counter(nil), counters...), arrivals: seenOnce(now)}
	})
	return e
}

// startLocked starts the goroutine on first use. Called with mu held,
// before close.
func (rs *reservations) startLocked() {
	if !rs.started {
		rs.started = true
		rs.wg.Add(1)
		go rs.loop()
	}
}

// pool returns the pool of spare places of a slot tuple with a request at
// now (nil if none is made, as lookup), starting the goroutine that sweeps
// idle pools.
func (rs *reservations) pool(slots []Slot, now time.Time) *placePool {
	p, made := rs.places.lookup(slots, now)
	if made {
		rs.mu.Lock()
		if !rs.closed {
			rs.startLocked()
		}
		rs.mu.Unlock()
	}
	return p
}

func keysOf(counters []Counter) []string {
	keys := make([]string, len(counters))
	for i, c := range counters {
		keys[i] = c.Key
	}
	return keys
}

// forget drops the sets with a counter of userID or groupID (both 0: all)
// and hands their units back.
func (rs *reservations) forget(userID, groupID int64) {
	rs.enqueue(rs.dropWhere(ofUserOrGroup(userID, groupID))...)
	rs.places.forget(userID, groupID)
}

// ofUserOrGroup matches the sets with a counter of userID or groupID (0 =
// none); both 0 match all.
func ofUserOrGroup(userID, groupID int64) func(e *reservation) bool {
	return func(e *reservation) bool {
		if userID == 0 && groupID == 0 {
			return true
		}
		for _, c := range e.counters {
			if (userID != 0 && c.UserID == userID) || (groupID != 0 && c.GroupID == groupID) {
				return true
			}
		}
		return false
	}
}

// sweep drops the sets idle for the TTL, give or take the sweep interval
// (between TTL*3/4 and TTL), and hands their units back.
func (rs *reservations) sweep(now time.Time) {
	idle := rs.ttl - rs.sweepEvery()
	rs.enqueue(rs.dropWhere(func(e *reservation) bool {
		return e.refill == nil && now.Sub(e.last) >= idle
	})...)
	rs.places.sweep(now, idle)
}

// dropWhere drops the sets for which match (called with the set's mu
// held) is true and returns their unused units to hand back.
func (rs *reservations) dropWhere(match func(e *reservation) bool) []handBack {
	now := time.Now()
	var backs []handBack
	rs.mu.Lock()
	for key, e := range rs.sets {
		e.mu.Lock()
		if match(e) {
			delete(rs.sets, key)
			if b, ok := e.drop(now); ok {
				backs = append(backs, b)
			}
		}
		e.mu.Unlock()
	}
	rs.mu.Unlock()
	return backs
}

// enqueue queues hand-backs for the goroutine, or sends them at once after
// close.
func (rs *reservations) enqueue(backs ...handBack) {
	if len(backs) == 0 {
		return
	}
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		go rs.send(backs)
		return
	}
	rs.pending = append(rs.pending, backs...)
	rs.mu.Unlock()
	signal(rs.kick)
}

// loop sweeps idle sets every sweepEvery and sends hand-backs as soon as
// they are queued.
func (rs *reservations) loop() {
	defer rs.wg.Done()
	t := time.NewTicker(rs.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-rs.ctx.Done():
			return
		case now := <-t.C:
			rs.sweep(now)
		case <-rs.kick:
		}
		rs.flush()
	}
}

// flush sends the queued hand-backs.
func (rs *reservations) flush() {
	rs.mu.Lock()
	backs := rs.pending
	rs.pending = nil
	rs.mu.Unlock()
	rs.send(backs)
}

// send hands back in one script call per window and Redis Cluster hash
// slot (one in all on a single node, but at a window change). A failed
// call is not retried: its answer may have been lost after Redis applied
// it, and a second decrement would give back units that were used. Its
// units stay counted until the window ends, which can refuse early but
// never admit more; HandBackErrors counts such calls.
func (rs *reservations) send(backs []handBack) {
	now := time.Now()
	type callKey struct {
		slot   uint16
		window int64
	}
	type call struct {
		keys  []string
		args  []any
		index map[string]int
	}
	calls := make(map[callKey]*call)
	for _, b := range backs {
		if !now.Before(b.until) {
			continue // lapsed with its window
		}
		ck := callKey{window: b.window}
		if rs.r.cluster {
			ck.slot = clusterSlot(b.keys[0])
		}
		c := calls[ck]
		if c == nil {
			c = &call{index: make(map[string]int)}
			calls[ck] = c
		}
		for _, k := range b.keys {
			if i, ok := c.index[k]; ok {
				c.args[3*i+2] = c.args[3*i+2].(int64) + b.units
				continue
			}
			hash, field := CounterPlace(k, rs.r.cluster)
			c.index[k] = len(c.keys)
			c.keys = append(c.keys, hash)
			c.args = append(c.args, field, b.window, b.units)
		}
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), rs.r.leases.cfg.Timeout)
		n, err := handBackScript.Run(ctx, rs.r.client, c.keys, c.args...).Int64()
		cancel()
		if err != nil {
			rs.handBackErrors.Add(1)
			continue
		}
		rs.handedBack.Add(uint64(n))
	}
}

// close stops the goroutine and sends what is queued and every unused
// unit, once.
func (rs *reservations) close() {
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return
	}
	rs.closed = true
	rs.mu.Unlock()
	rs.cancel()
	rs.wg.Wait()
	rs.places.close()
	backs := rs.dropWhere(func(*reservation) bool { return true })
	rs.mu.Lock()
	backs = append(backs, rs.pending...)
	rs.pending = nil
	rs.mu.Unlock()
	rs.send(backs)
}
