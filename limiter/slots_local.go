package limiter

import "context"

// CheckAcquire implements Acquirer. The slot sets are counts in memory;
// Release gives a place back at once.
func (l *Local) CheckAcquire(_ context.Context, counters []Counter, slots []Slot) (AcquireResult, *Lease, error) {
	if len(counters) == 0 && len(slots) == 0 {
		return AcquireResult{Result: Result{Allowed: true, Denied: -1}, DeniedSlot: -1}, nil, nil
	}
	res, lease := l.acquire(counters, slots)
	return res, lease, nil
}

// acquire decides counters and slots under the lock: every counter below
// its limit and every set below its limit, or nothing changes.
func (l *Local) acquire(counters []Counter, slots []Slot) (AcquireResult, *Lease) {
	w, reset := l.window()
	res := AcquireResult{
		Result:     Result{Counts: make([]int64, len(counters)), Denied: -1, ResetIn: reset},
		DeniedSlot: -1,
	}
	if len(slots) > 0 {
		res.InFlight = make([]int64, len(slots))
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(w)
	for i, c := range counters {
		if e, ok := l.counts[c.Key]; ok && e.window == w {
			res.Counts[i] = e.n
		}
	}
	for i, s := range slots {
		res.InFlight[i] = l.slots[s.Key]
	}
	for i, c := range counters {
		if res.Counts[i] >= c.Limit {
			res.Denied = i
			return res, nil
		}
	}
	for i, s := range slots {
		if res.InFlight[i] >= s.Limit {
			res.DeniedSlot = i
			return res, nil
		}
	}
	res.Allowed = true
	for i, c := range counters {
		res.Counts[i]++
		l.counts[c.Key] = localCount{window: w, n: res.Counts[i]}
	}
	if len(slots) == 0 {
		return res, nil
	}
	lease := &Lease{owner: l, keys: make([]string, len(slots))}
	for i, s := range slots {
		res.InFlight[i]++
		l.slots[s.Key] = res.InFlight[i]
		lease.keys[i] = s.Key
	}
	l.held.Add(1)
	return res, lease
}

// release implements leaseOwner.
func (l *Local) release(lease *Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range lease.keys {
		if n := l.slots[key] - 1; n > 0 {
			l.slots[key] = n
		} else {
			delete(l.slots, key)
		}
	}
	l.held.Add(-1)
}

// InFlight implements Acquirer.
func (l *Local) InFlight() int64 { return l.held.Load() }

// PeekSlots implements Acquirer.
func (l *Local) PeekSlots(_ context.Context, keys []string) ([]int64, error) {
	held := make([]int64, len(keys))
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, key := range keys {
		held[i] = l.slots[key]
	}
	return held, nil
}
