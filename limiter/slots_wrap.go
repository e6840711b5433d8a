package limiter

import (
	"context"
	"time"
)

// Concurrency slots through the wrappers: Guarded bounds and guards
// CheckAcquire like Check; DenyCache refuses locally on a counter it
// remembers full (taking nothing) but never remembers a full slot set,
// which may have room again at any moment.

// deadlineAcquirer is deadlineChecker for CheckAcquire.
type deadlineAcquirer interface {
	acquireBy(ctx context.Context, now, deadline time.Time, counters []Counter, slots []Slot) (AcquireResult, *Lease, error)
}

// CheckAcquire implements Acquirer.
func (g *Guarded) CheckAcquire(ctx context.Context, counters []Counter, slots []Slot) (AcquireResult, *Lease, error) {
	if len(slots) == 0 {
		res, err := g.Check(ctx, counters)
		return AcquireResult{Result: res, DeniedSlot: -1}, nil, err
	}
	inner, err := acquirerOf(g.inner)
	if err != nil {
		return refusedAcquire(), nil, err
	}
	now := time.Now()
	deadline := now.Add(g.timeout)
	c := g.circuitFor(ctx, deadline, firstKey(counters, slots))
	if c.open.Load() {
		return refusedAcquire(), nil, ErrOpen
	}
	var res AcquireResult
	var lease *Lease
	if da, ok := g.inner.(deadlineAcquirer); ok {
		res, lease, err = da.acquireBy(ctx, now, deadline, counters, slots)
	} else {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		res, lease, err = inner.CheckAcquire(cctx, counters, slots)
		cancel()
	}
	if err != nil {
		return refusedAcquire(), nil, g.fail(ctx, c, err)
	}
	c.succeed()
	return res, lease, nil
}

// PeekSlots implements Acquirer.
func (g *Guarded) PeekSlots(ctx context.Context, keys []string) ([]int64, error) {
	inner, err := acquirerOf(g.inner)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(g.timeout)
	c := g.keysCircuit(ctx, deadline, keys)
	if c.open.Load() {
		return nil, ErrOpen
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	held, err := inner.PeekSlots(cctx, keys)
	cancel()
	if err != nil {
		return nil, g.fail(ctx, c, err)
	}
	c.succeed()
	return held, nil
}

// InFlight implements Acquirer; 0 when inner takes no slots.
func (g *Guarded) InFlight() int64 { return inFlightOf(g.inner) }

// CheckAcquire implements Acquirer.
func (d *DenyCache) CheckAcquire(ctx context.Context, counters []Counter, slots []Slot) (AcquireResult, *Lease, error) {
	if len(slots) == 0 {
		res, err := d.Check(ctx, counters)
		return AcquireResult{Result: res, DeniedSlot: -1}, nil, err
	}
	inner, err := acquirerOf(d.inner)
	if err != nil {
		return refusedAcquire(), nil, err
	}
	var claim *denyClaim
	if len(counters) > 0 && d.size.Load() > 0 {
		res, c, ok := d.local(counters)
		if ok {
			return AcquireResult{Result: res, DeniedSlot: -1}, nil, nil
		}
		claim = c
	}
	start := d.now()
	res, lease, err := inner.CheckAcquire(ctx, counters, slots)
	d.settle(start, claim, counters, err == nil && res.Denied >= 0, res.Result)
	return res, lease, err
}

// PeekSlots implements Acquirer.
func (d *DenyCache) PeekSlots(ctx context.Context, keys []string) ([]int64, error) {
	inner, err := acquirerOf(d.inner)
	if err != nil {
		return nil, err
	}
	return inner.PeekSlots(ctx, keys)
}

// InFlight implements Acquirer; 0 when inner takes no slots.
func (d *DenyCache) InFlight() int64 { return inFlightOf(d.inner) }

// inFlightOf is l's InFlight, or 0 when it takes no slots.
func inFlightOf(l Limiter) int64 {
	if a, ok := l.(Acquirer); ok {
		return a.InFlight()
	}
	return 0
}

// The limiters of this package all take slots.
var (
	_ Acquirer = (*Redis)(nil)
	_ Acquirer = (*Local)(nil)
	_ Acquirer = (*Guarded)(nil)
	_ Acquirer = (*DenyCache)(nil)
)
