package limiter

import "time"

// What reservations hold and did, for status pages and metrics.

// ReservationStats counts what reservations did since the limiter was
// made.
type ReservationStats struct {
	// Granted is the number of grants of more than one unit.
	Granted uint64
	// Local is the number of requests admitted from a reservation, without
	// a Redis call.
	Local uint64
	// HandedBack is the number of unused units Redis took back, summed
	// over the counters (a grant of a request with two counters that
	// leaves 5 units unused gives back 10).
	HandedBack uint64
	// Unanswered is the number of reserving checks whose answer was lost
	// (timeout, connection lost): the units such a check may have taken
	// stay counted until the end of their window (never admitting more).
	Unanswered uint64
	// HandBackErrors is the number of hand-back calls that failed: their
	// units stay counted until the end of their window.
	HandBackErrors uint64
}

// ReservationStats returns the counts of the limiter's reservations; all 0
// when they are off.
func (r *Redis) ReservationStats() ReservationStats {
	rs := r.reserve
	if rs == nil {
		return ReservationStats{}
	}
	return ReservationStats{
		Granted:        rs.granted.Load(),
		Local:          rs.local.Load(),
		HandedBack:     rs.handedBack.Load(),
		Unanswered:     rs.unanswered.Load(),
		HandBackErrors: rs.handBackErrors.Load(),
	}
}

// Reserved implements Limiter: per key, the units of this instance's
// grants that are left to admit locally, summed over the counter sets
// with that key. Redis counts them already, so Peek's counts include
// them. Units on their way back to Redis (handed back, not yet sent) and
// those of a grant whose window is over are not reserved any more. All 0
// when reservations are off.
func (r *Redis) Reserved(keys []string) []int64 {
	out := make([]int64, len(keys))
	if r.reserve != nil {
		r.reserve.reserved(keys, out)
	}
	return out
}

// reserved adds to out[i] the units left in the grants of the sets with
// counter keys[i]. It visits every set, so it is for status requests, not
// the request path; the sets' locks are taken after the map's is
// released, so requests wait for no more than the scan.
func (rs *reservations) reserved(keys []string, out []int64) {
	index := make(map[string]int, len(keys))
	for i, k := range keys {
		index[k] = i
	}
	var sets []*reservation
	rs.mu.RLock()
	for _, e := range rs.sets {
		// counters never change once the set is made.
		for _, c := range e.counters {
			if _, ok := index[c.Key]; ok {
				sets = append(sets, e)
				break
			}
		}
	}
	rs.mu.RUnlock()
	now := time.Now()
	for _, e := range sets {
		e.mu.Lock()
		units := e.units
		if !now.Before(e.end) {
			units = 0 // lapsed with its window
		}
		e.mu.Unlock()
		if units <= 0 {
			continue
		}
		for _, c := range e.counters {
			if i, ok := index[c.Key]; ok {
				out[i] += units
			}
		}
	}
	// A key given twice was summed at its last place.
	for i, k := range keys {
		out[i] = out[index[k]]
	}
}
