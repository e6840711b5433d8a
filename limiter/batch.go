package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Coalescing concurrent checks
//
// Every Check is one script call in one round trip, but under load many
// requests want Redis at the same moment. A batcher lets one call be in
// flight at a time; a check that arrives while it is out waits for the
// next call instead and rides in it with every other check that queued
// meanwhile. At low concurrency nothing would join it: while calls carry
// about one check each, a check that finds only a call of a single check
// out, and nothing queued, goes out at once in a second call rather than
// wait a round trip for nothing. The script runs the checks of one call
// one after the other, each atomic on its own, exactly as separate calls
// would — so exactness and "a refused request increments nothing" hold
// per check — while the round trip, the syscalls and the script start-up
// are paid once per call. At low load nothing queues and each check goes
// out at once.
//
// A check may carry a deadline (the Guarded timeout). It costs no timer of
// its own: the call that carries it is bounded by the earliest deadline of
// its checks, and a check only ever waits for calls that started before
// it arrived (so end before its deadline) and then for the one that carries
// it. A queued caller still leaves at once when its own context ends.

const (
	// maxInFlight is how many script calls of one batcher may be out at
	// once while checks queue. One makes the largest batches, and a call
	// costs Redis and Caddy far more (syscalls, wake-ups, script start)
	// than a check in it; two measured lower throughput and no lower
	// latency under load (bench/run.sh).
	maxInFlight = 1
	// loneCalls is how many calls may be out at once while each carries a
	// single check and none is queued, at low load: with two requests at
	// a time, a check that waited for the other's call would then go out
	// alone anyway, a round trip later.
	loneCalls = 2
	// loneLoad is the load below which lone calls go out: the checks per
	// call, on average over the last calls. Above it checks are batched,
	// and a second call would only split the next batch (measured under
	// load: a fifth more calls per request without this bound).
	loneLoad = 1.5
	// maxBatch bounds the checks of one script call.
	maxBatch = 64
)

// pendingCheck is a check waiting for a script call.
type pendingCheck struct {
	ctx      context.Context
	deadline time.Time // zero: none but ctx's
	counters []Counter
	slots    []Slot
	member   *string // the lease member its slots are taken as
	// spareWant is how many spare places the check asks for with its
	// slots (places.go); spares is how many it got.
	spareWant, spares int64
	// sent is set once a script call has taken the check: from then on
	// Redis may carry it out even if its caller gets no answer.
	sent atomic.Bool
	res  Result
	// deniedSlot and inFlight are the slots' outcome (see AcquireResult).
	deniedSlot int
	inFlight   []int64
	err        error
	done       chan struct{} // closed once res and err are set
}

// key is a key of the check. All its keys are in that key's Cluster slot.
func (p *pendingCheck) key() string { return firstKey(p.counters, p.slots) }

// firstKey is the first key of a check of counters and slots (not both
// empty): the one that names its Cluster slot and server.
func firstKey(counters []Counter, slots []Slot) string {
	if len(counters) > 0 {
		return counters[0].Key
	}
	return slots[0].Key
}

// fail records that the check could not be asked of Redis.
func (p *pendingCheck) fail(err error) {
	p.res, p.deniedSlot, p.err = Result{Denied: -1}, -1, unavailable("redis check", err)
}

// batcher coalesces the checks of one Redis server: the only one, or a
// Cluster master (route.go).
type batcher struct {
	run func(ctx context.Context, checks []*pendingCheck)

	mu       sync.Mutex
	inFlight int     // calls out
	sent     int     // checks in the calls out
	perCall  float64 // checks per call, a moving average over about eight calls
	queue    []*pendingCheck
}

// check runs counters in a script call of their own if one may go out now,
// otherwise in the next batch. The check ends by deadline (if not zero) or
// when ctx ends, whichever comes first.
func (b *batcher) check(ctx context.Context, deadline time.Time, counters []Counter) (Result, error) {
	p := &pendingCheck{counters: counters}
	if err := b.do(ctx, deadline, p); err != nil {
		return Result{Denied: -1}, err
	}
	return p.res, nil
}

// do runs the check p (its counters, slots and member set) like check. On
// a nil error p holds the outcome; on an error p must not be read, as a
// call may still be writing it.
func (b *batcher) do(ctx context.Context, deadline time.Time, p *pendingCheck) error {
	p.ctx, p.deadline = ctx, deadline
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		p.deadline = d
	}
	b.mu.Lock()
	if b.inFlight < maxInFlight || b.lone() {
		b.inFlight++
		b.sent++
		b.mu.Unlock()
		p.sent.Store(true)
		callCtx, cancel := withDeadline(ctx, p.deadline)
		b.run(callCtx, []*pendingCheck{p})
		cancel()
		b.next()
		return p.err
	}
	p.done = make(chan struct{})
	b.queue = append(b.queue, p)
	b.mu.Unlock()

	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		// The caller gave up (its deadline is also kept by the calls, see
		// above). If a call already took the check it may still count it,
		// like a call that timed out on the wire.
		b.mu.Lock()
		for i, q := range b.queue {
			if q == p {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		// Not p.fail: a call that took p may be writing p.res right now.
		return unavailable("redis check", ctx.Err())
	}
}

// next sends what queued during a call of one check, or frees the call's
// place. The queued checks are sent from a new goroutine: their callers
// are parked, and the caller that made the last call should get on with
// its request.
func (b *batcher) next() {
	b.mu.Lock()
	batch := b.ended(1)
	b.mu.Unlock()
	if batch != nil {
		go b.drain(batch)
	}
}

// drain sends batch and then whatever queued meanwhile, until nothing is
// left.
func (b *batcher) drain(batch []*pendingCheck) {
	for batch != nil {
		ctx, cancel := batchContext(batch)
		b.run(ctx, batch)
		cancel()
		for _, p := range batch {
			close(p.done)
		}
		b.mu.Lock()
		batch = b.ended(len(batch))
		b.mu.Unlock()
	}
}

// lone reports whether a check may go out at once beside the calls out:
// at low load, with each call out carrying one check and none queued.
// Called with mu held.
func (b *batcher) lone() bool {
	return b.inFlight < loneCalls && b.sent == b.inFlight && len(b.queue) == 0 && b.perCall < loneLoad
}

// ended records the end of a call of n checks and returns the next batch
// for its place, or nil if the place is freed. Only the last call out
// takes the queue: with another call out (two lone calls), the queue
// waits for that one, which started before any queued check arrived, so
// that at most one batch is ever out. Called with mu held.
func (b *batcher) ended(n int) []*pendingCheck {
	b.sent -= n
	b.perCall += (float64(n) - b.perCall) / 8
	var batch []*pendingCheck
	if b.inFlight <= maxInFlight {
		batch = b.take()
	}
	if batch == nil {
		b.inFlight--
	}
	b.sent += len(batch)
	return batch
}

// take removes up to maxBatch checks from the queue, failing those whose
// caller has given up or whose deadline has passed. Called with mu held.
func (b *batcher) take() []*pendingCheck {
	var batch []*pendingCheck
	n := 0
	now := time.Now()
	for n < len(b.queue) && len(batch) < maxBatch {
		p := b.queue[n]
		n++
		err := p.ctx.Err() // its caller has left or is leaving through ctx.Done
		if err == nil && !p.deadline.IsZero() && !now.Before(p.deadline) {
			err = context.DeadlineExceeded
		}
		if err != nil {
			p.fail(err)
			close(p.done)
			continue
		}
		p.sent.Store(true) // under mu: a caller leaving sees it gone from the queue
		batch = append(batch, p)
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// batchContext bounds a shared call by the earliest deadline of its checks,
// so every check of it ends by its own deadline; no caller's cancellation
// fails the others' checks.
func batchContext(batch []*pendingCheck) (context.Context, context.CancelFunc) {
	var earliest time.Time
	for _, p := range batch {
		if !p.deadline.IsZero() && (earliest.IsZero() || p.deadline.Before(earliest)) {
			earliest = p.deadline
		}
	}
	return withDeadline(context.WithoutCancel(batch[0].ctx), earliest)
}

// withDeadline is context.WithDeadline, or ctx itself for a zero deadline.
func withDeadline(ctx context.Context, d time.Time) (context.Context, context.CancelFunc) {
	if d.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, d)
}
