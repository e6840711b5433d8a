package limiter

import (
	"context"
	"sync"
	"time"
)

// Coalescing concurrent checks
//
// Every Check is one script call in one round trip, but under load many
// requests want Redis at the same moment. A batcher lets a few calls be in
// flight at once; a check that arrives while that many are out waits for
// the next call instead and rides in it with every other check that queued
// meanwhile. The script runs the checks of one call one after the other,
// each atomic on its own, exactly as separate calls would — so exactness
// and "a refused request increments nothing" hold per check — while the
// round trip, the syscalls and the script start-up are paid once per call.
// At low load nothing queues and each check goes out at once.

const (
	// maxInFlight is how many script calls of one batcher may be out at
	// once. Redis runs scripts one at a time; two keep it busy while a
	// reply travels back.
	maxInFlight = 2
	// maxBatch bounds the checks of one script call.
	maxBatch = 64
)

// pendingCheck is a check waiting for a script call.
type pendingCheck struct {
	ctx      context.Context
	counters []Counter
	res      Result
	err      error
	done     chan struct{} // closed once res and err are set
}

// fail records that the check could not be asked of Redis.
func (p *pendingCheck) fail(err error) {
	p.res, p.err = Result{Denied: -1}, unavailable("redis check", err)
}

// batcher coalesces the checks of one Redis Cluster slot (or of the whole
// server when it is not a cluster).
type batcher struct {
	run func(ctx context.Context, checks []*pendingCheck)

	mu       sync.Mutex
	inFlight int
	queue    []*pendingCheck
}

// check runs counters in a script call of their own if one may go out now,
// otherwise in the next batch.
func (b *batcher) check(ctx context.Context, counters []Counter) (Result, error) {
	p := &pendingCheck{ctx: ctx, counters: counters}
	b.mu.Lock()
	if b.inFlight < maxInFlight {
		b.inFlight++
		b.mu.Unlock()
		b.run(ctx, []*pendingCheck{p})
		b.next()
		return p.res, p.err
	}
	p.done = make(chan struct{})
	b.queue = append(b.queue, p)
	b.mu.Unlock()

	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		// Leave now to keep the caller's deadline. If a call already took
		// the check it may still count it, like a call that timed out on
		// the wire.
		b.mu.Lock()
		for i, q := range b.queue {
			if q == p {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
		// Not p.fail: a call that took p may be writing p.res right now.
		return Result{Denied: -1}, unavailable("redis check", ctx.Err())
	}
}

// next sends what queued during a call, or frees the call's place. The
// queued checks are sent from a new goroutine: their callers are parked,
// and the caller that made the last call should get on with its request.
func (b *batcher) next() {
	b.mu.Lock()
	batch := b.take()
	if batch == nil {
		b.inFlight--
	}
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
		batch = b.take()
		if batch == nil {
			b.inFlight--
		}
		b.mu.Unlock()
	}
}

// take removes up to maxBatch checks from the queue, skipping those whose
// caller has given up. Called with mu held.
func (b *batcher) take() []*pendingCheck {
	var batch []*pendingCheck
	n := 0
	for n < len(b.queue) && len(batch) < maxBatch {
		p := b.queue[n]
		n++
		if err := p.ctx.Err(); err != nil {
			// Its caller has left or is leaving through ctx.Done.
			p.fail(err)
			close(p.done)
			continue
		}
		batch = append(batch, p)
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// batchContext bounds a shared call by the latest deadline of its checks:
// each caller still leaves at its own deadline, and no caller's
// cancellation fails the others' checks.
func batchContext(batch []*pendingCheck) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range batch {
		d, ok := p.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.WithoutCancel(p.ctx))
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
