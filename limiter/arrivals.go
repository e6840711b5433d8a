package limiter

import "time"

// arrivals is the recent request rate of one reserved set (of counters or
// of concurrency slots), which sizes its grants.
type arrivals struct {
	// last is the time of the set's last request.
	last time.Time
	// bucket starts the current rateBucket; cur and prev count the
	// requests in it and in the one before.
	bucket    time.Time
	cur, prev int64
}

// seenOnce is the rate of a set made at its second request within
// rateBucket, at now, before arrive counts that one: the first (whose time
// is not kept) counts in the bucket starting now.
func seenOnce(now time.Time) arrivals { return arrivals{bucket: now, cur: 1} }

// arrive counts a request of the set at now.
func (a *arrivals) arrive(now time.Time) {
	a.last = now
	switch d := now.Sub(a.bucket); {
	case d < rateBucket:
	case d < 2*rateBucket:
		a.bucket, a.prev, a.cur = a.bucket.Add(rateBucket), a.cur, 0
	default:
		a.bucket, a.prev, a.cur = now, 0, 0
	}
	a.cur++
}

// want is the grant to ask for: the requests of the last full rateBucket,
// or of the current one if more, at most bound.
func (a *arrivals) want(bound int64) int64 {
	return min(max(a.prev, a.cur), bound)
}
