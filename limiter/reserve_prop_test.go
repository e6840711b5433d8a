package limiter

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// A property of the reservation script and its bookkeeping: random
// interleavings of reserving checks, local admissions, hand-backs (Forget
// by user, by group, of all; idle sweeps) and window ends, by three
// instances on five counter sets over four shared counters, never admit
// more than a limit, keep every Redis count equal to what was admitted
// plus the units the instances hold unused, and end, once everything is
// handed back, with the counts equal to the admitted totals.
func TestReservationProperty(t *testing.T) {
	c, keys := singleClient(t)
	ctx := context.Background()
	var insts [3]*Redis
	for i := range insts {
		insts[i] = NewRedis(c, WithReservations(time.Hour)) // no idle sweep of its own
		t.Cleanup(func() { insts[i].Close() })
	}
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 14))
		redistest.WaitForWindow(t, c, 5*time.Second)
		prefix := Keys{Prefix: keys.Prefix + "s" + string(rune('a'+seed)) + ":"}
		names := []string{prefix.User(1), prefix.UserGroup(1, 1), prefix.UserGroup(1, 2), prefix.ZoneUser("z", 1)}
		limits := make([]int64, len(names))
		for i := range limits {
			limits[i] = 40 + rng.Int64N(400)
		}
		counter := func(i int) Counter {
			c := Counter{Key: names[i], Limit: limits[i], UserID: 1}
			if i == 1 || i == 2 {
				c.GroupID = int64(i)
			}
			return c
		}
		sets := [][]int{{0}, {0, 1}, {0, 2}, {0, 3, 1}, {3}}
		admitted := make([]int64, len(names))
		// randomSet is one of sets and its counters.
		randomSet := func() ([]int, []Counter) {
			idx := sets[rng.IntN(len(sets))]
			counters := make([]Counter, len(idx))
			for i, j := range idx {
				counters[i] = counter(j)
			}
			return idx, counters
		}
		// check checks the counters of idx on r and counts what it admits,
		// then waits for the refill it may have started ahead.
		check := func(r *Redis, idx []int, counters []Counter) {
			res, err := r.Check(ctx, counters)
			if err != nil {
				t.Fatal(err)
			}
			settleRefills(t, r)
			if res.Allowed {
				for _, j := range idx {
					admitted[j]++
				}
			}
		}
		var log []string

		for op := range 200 {
			r := insts[rng.IntN(len(insts))]
			switch p := rng.IntN(100); {
			case p < 70:
				idx, counters := randomSet()
				want := int64(1)
				if p < 55 {
					want = 1 + rng.Int64N(maxGrant)
				}
				e := hotSet(r, counters)
				e.mu.Lock()
				e.bucket, e.prev, e.cur = time.Now(), want, 0
				e.mu.Unlock()
				check(r, idx, counters)
				log = append(log, "check")
			case p < 80:
				user, group := int64(0), int64(0)
				switch rng.IntN(4) {
				case 0:
					user = 1
				case 1:
					group = 1
				case 2:
					group = 2
				}
				r.reserve.send(r.reserve.dropWhere(ofUserOrGroup(user, group)))
				log = append(log, "forget")
			case p < 90:
				r.reserve.send(r.reserve.dropWhere(func(e *reservation) bool { return e.refill == nil }))
				log = append(log, "sweep")
			case p < 94:
				endWindow(t, c, names, insts[:])
				clear(admitted)
				log = append(log, "window end")
			default:
				// More local admissions in a row.
				log = append(log, "burst")
				idx, counters := randomSet()
				for range 10 {
					check(r, idx, counters)
				}
			}
			counts, _, err := insts[0].Peek(ctx, names)
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range counts {
				held := int64(0)
				for _, inst := range insts {
					held += unusedOf(inst, names[i])
				}
				if admitted[i] > limits[i] || n > limits[i] || n != admitted[i]+held {
					t.Fatalf("seed %d op %d (%s): counter %d: admitted %d, Redis %d, held unused %d, limit %d",
						seed, op, log[len(log)-1], i, admitted[i], n, held, limits[i])
				}
			}
		}
		for _, inst := range insts {
			inst.reserve.send(inst.reserve.dropWhere(func(*reservation) bool { return true }))
		}
		var local uint64
		for _, inst := range insts {
			local += inst.ReservationStats().Local
		}
		if local == 0 {
			t.Fatalf("seed %d: no request admitted from a reservation", seed)
		}
		counts, _, err := insts[0].Peek(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range counts {
			if n != admitted[i] {
				t.Fatalf("seed %d: after handing everything back counter %d is %d, admitted %d", seed, i, n, admitted[i])
			}
		}
	}
}

// unusedOf returns the units r holds unused on the counter key.
func unusedOf(r *Redis, key string) int64 {
	var n int64
	now := time.Now()
	r.reserve.mu.RLock()
	defer r.reserve.mu.RUnlock()
	for _, e := range r.reserve.sets {
		e.mu.Lock()
		for _, c := range e.counters {
			if c.Key == key && now.Before(e.end) {
				n += e.units
			}
		}
		e.mu.Unlock()
	}
	return n
}

// endWindow makes Redis and the instances act as if the window had ended:
// the counters' window field moves one back (so they read as 0 and the
// next write starts a new window) and every grant lapses.
func endWindow(t *testing.T, c redis.UniversalClient, names []string, insts []*Redis) {
	t.Helper()
	ctx := context.Background()
	moved := make(map[string]bool)
	for _, name := range names {
		hash, _ := counterPlace(c, name)
		if moved[hash] {
			continue
		}
		moved[hash] = true
		w, err := c.HGet(ctx, hash, "w").Int64()
		if err == redis.Nil {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, hash, "w", w-1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range insts {
		r.reserve.mu.RLock()
		for _, e := range r.reserve.sets {
			e.mu.Lock()
			e.end = time.Time{}
			e.mu.Unlock()
		}
		r.reserve.mu.RUnlock()
	}
}
