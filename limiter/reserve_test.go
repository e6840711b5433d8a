package limiter

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// reservingPair is two Redis limiters with reservations (two instances)
// on two clients of the shared Redis, under one key prefix, their scripts
// loaded, at a point of the window with at least minRemaining left. hook
// counts the commands of both.
func reservingPair(t *testing.T, ttl time.Duration) ([2]*Redis, Keys, *cmdCounter) {
	t.Helper()
	c1, keys, hook := countedClient(t)
	c2 := redis.NewClient(&redis.Options{Addr: redistest.SharedAddr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c2.Close() })
	c2.AddHook(hook)
	var pair [2]*Redis
	for i, c := range []redis.UniversalClient{c1, c2} {
		pair[i] = NewRedis(c, WithReservations(ttl))
		t.Cleanup(func() { pair[i].Close() })
		if err := pair[i].Load(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	redistest.WaitForWindow(t, c1, minRemaining)
	hook.reset()
	return pair, keys, hook
}

// unusedUnits returns the units r's reservations hold unused.
func unusedUnits(r *Redis) int64 {
	var n int64
	r.reserve.mu.RLock()
	defer r.reserve.mu.RUnlock()
	for _, e := range r.reserve.sets {
		e.mu.Lock()
		if time.Now().Before(e.end) {
			n += e.units
		}
		e.mu.Unlock()
	}
	return n
}

// drive checks counters from n goroutines until each has been refused
// once, and returns the number admitted.
func drive(t *testing.T, l Limiter, n int, counters []Counter) int64 {
	t.Helper()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				res, err := l.Check(context.Background(), counters)
				if err != nil {
					t.Error(err)
					return
				}
				if !res.Allowed {
					return
				}
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	return admitted.Load()
}

// Two instances driven at full speed past a limit of 2000: exactly 2000
// admitted in all, with far fewer script calls than requests.
func TestReservationsExactAcrossInstances(t *testing.T) {
	const limit = 2000
	ttl := 100 * time.Millisecond
	pair, keys, hook := reservingPair(t, ttl)
	counters := []Counter{{Key: keys.User(1), Limit: limit, UserID: 1}}

	var total atomic.Int64
	var wg sync.WaitGroup
	for _, r := range pair {
		wg.Add(1)
		go func() {
			defer wg.Done()
			total.Add(drive(t, r, 16, counters))
		}()
	}
	wg.Wait()
	calls := hook.evalsha.Load() + hook.eval.Load()
	// Units one instance reserved and stopped using come back after the
	// TTL: drive again until Redis counts exactly what was admitted.
	for round := 0; ; round++ {
		count, err := pair[0].Count(context.Background(), counters[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		if got := total.Load(); got > limit || count > limit {
			t.Fatalf("admitted %d, Redis count %d: over the limit %d", got, count, limit)
		}
		if count == total.Load() {
			break
		}
		if round == 20 {
			t.Fatalf("Redis count %d never came down to the %d admitted", count, total.Load())
		}
		time.Sleep(ttl + ttl/2)
		for _, r := range pair {
			total.Add(drive(t, r, 1, counters))
		}
	}
	if got := total.Load(); got != limit {
		t.Fatalf("admitted %d in all, want exactly %d", got, limit)
	}
	st0, st1 := pair[0].ReservationStats(), pair[1].ReservationStats()
	if st0.Local+st1.Local == 0 || st0.Granted == 0 || st1.Granted == 0 {
		t.Fatalf("reservations not used by both instances: %+v, %+v", st0, st1)
	}
	if calls > limit/4 {
		t.Fatalf("%d script calls to admit %d requests at full speed, want < %d", calls, limit, limit/4)
	}
	t.Logf("%d script calls while driving, stats %+v %+v", calls, st0, st1)
}

// One instance stops while holding unused units: the other, refused at the
// apparent limit, is admitted again within the TTL plus 100 ms — through
// the deny cache, which must not remember such a refusal to the end of the
// window.
func TestReservationIdleHandedBack(t *testing.T) {
	const limit = 1000
	ttl := DefaultReservationTTL
	pair, keys, _ := reservingPair(t, ttl)
	counters := []Counter{{Key: keys.User(1), Limit: limit, UserID: 1}}
	a := pair[0]
	b := NewDenyCache(NewGuarded(pair[1], time.Second, nil), nil)
	ctx := context.Background()

	// Others admitted 700 (so that B reaches the limit quickly).
	if res, err := b.Check(ctx, counters); err != nil || !res.Allowed {
		t.Fatalf("first check: %+v %v", res, err)
	}
	setRawCount(t, a.client, counters[0].Key, 700)
	fromOthers := int64(700)

	// A takes a grant under load and keeps units of it.
	var fromA int64
	for attempt := 0; unusedUnits(a) == 0; attempt++ {
		if attempt == 50 {
			t.Fatal("instance A never held a reservation")
		}
		fromA += driveN(t, a, 8, 5, counters)
		settleRefills(t, a)
	}
	held := unusedUnits(a)
	stopped := time.Now()

	// B, alone, goes to the apparent limit.
	var fromB int64
	var refused time.Time
	for {
		res, err := b.Check(context.Background(), counters)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed {
			refused = time.Now()
			break
		}
		fromB++
	}
	if got := fromOthers + fromA + fromB; got >= limit {
		t.Fatalf("refused only after %d admitted: A's %d unused units were not counted", got, held)
	}
	if refused.Sub(stopped) >= ttl {
		t.Skipf("B reached the limit %v after A stopped; A may have handed back already", refused.Sub(stopped))
	}
	// B is admitted again once A's units are back.
	for {
		res, err := b.Check(context.Background(), counters)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			fromB++
			break
		}
		if time.Since(refused) > ttl+100*time.Millisecond {
			t.Fatalf("still refused %v after the apparent limit (A held %d unused units)", time.Since(refused), held)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("admitted again %v after the apparent limit; A held %d units", time.Since(refused), held)
	// And the limit holds exactly: B takes what is left and no more.
	fromB += drive(t, b, 1, counters)
	if got := fromOthers + fromA + fromB; got != limit {
		t.Fatalf("admitted %d in all, want %d", got, limit)
	}
}

// A lowered limit applies on the next request although the instance holds
// unused units for the set, and Forget hands those units back.
func TestReservationForgetLoweredLimit(t *testing.T) {
	pair, keys, hook := reservingPair(t, time.Hour) // no idle hand-back
	r := pair[0]
	counters := []Counter{
		{Key: keys.User(7), Limit: 1000, UserID: 7},
		{Key: keys.UserGroup(7, 3), Limit: 1000, UserID: 7, GroupID: 3},
	}
	var admitted atomic.Int64
	for attempt := 0; unusedUnits(r) == 0; attempt++ {
		if attempt == 50 {
			t.Fatal("never held a reservation")
		}
		admitted.Add(driveN(t, r, 8, 5, counters))
		settleRefills(t, r)
	}
	held := unusedUnits(r)

	// The group limit drops to what was admitted: the group is forgotten
	// (invalidation) and the next request, with the new limit, is refused.
	lowered := []Counter{counters[0], counters[1]}
	lowered[1].Limit = admitted.Load()
	r.Forget(0, 3)
	if n := unusedUnits(r); n != 0 {
		t.Fatalf("%d units still held after Forget", n)
	}
	hook.reset()
	res, err := r.Check(context.Background(), lowered)
	if err != nil {
		t.Fatal(err)
	}
	if res.Allowed {
		t.Fatalf("admitted at the lowered limit %d: %+v", lowered[1].Limit, res)
	}
	if hook.evalsha.Load() == 0 {
		t.Fatal("the refusal was not decided in Redis")
	}
	// The units come back: Redis counts what was admitted, and a limit of
	// one more admits exactly one more.
	waitFor(t, time.Second, func() bool {
		n, err := r.Count(context.Background(), counters[1].Key)
		return err == nil && n == admitted.Load() && r.ReservationStats().HandedBack > 0
	}, "Redis count back to the admitted total")
	if st := r.ReservationStats(); st.HandedBack != 2*uint64(held) {
		t.Fatalf("handed back %d counter units, held %d units of two counters", st.HandedBack, held)
	}
	lowered[1].Limit = admitted.Load() + 1
	if got := drive(t, r, 4, lowered); got != 1 {
		t.Fatalf("admitted %d at one below the limit, want 1", got)
	}
}

// driveN checks counters n times from each of g goroutines, all admitted.
func driveN(t *testing.T, l Limiter, g, n int, counters []Counter) int64 {
	t.Helper()
	return parallel(g, n, func(int) bool {
		res, err := l.Check(context.Background(), counters)
		if err != nil || !res.Allowed {
			t.Errorf("check: %+v %v", res, err)
			return false
		}
		return true
	})
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Counts of a request admitted from a reservation continue those of the
// granting request, one per local admission (a Local result), also across
// grants fetched ahead: once a grant is half used the next one is asked
// for in the background, so a steady set's requests after the first are
// all admitted locally, none waiting for Redis.
func TestReservationCounts(t *testing.T) {
	pair, keys, hook := reservingPair(t, time.Hour)
	r := pair[0]
	counters := []Counter{{Key: keys.User(1), Limit: 1000}}
	primeRate(r, counters, 10)
	const requests = 40
	for i := int64(1); i <= requests; i++ {
		res, err := r.Check(context.Background(), counters)
		if err != nil || !res.Allowed {
			t.Fatalf("check %d: %+v %v", i, res, err)
		}
		if res.Counts[0] != i {
			t.Fatalf("check %d: count %d", i, res.Counts[0])
		}
		if res.Local != (i > 1) {
			t.Fatalf("check %d: Local %v; only the admissions from reserved units are local", i, res.Local)
		}
		if res.ResetIn <= 0 || res.ResetIn > Window {
			t.Fatalf("check %d: reset in %v", i, res.ResetIn)
		}
		settleRefills(t, r)
	}
	st := r.ReservationStats()
	if st.Local != requests-1 || st.Granted < 2 {
		t.Fatalf("%+v: want %d local admissions, from the first grant and grants fetched ahead", st, requests-1)
	}
	if calls := hook.evalsha.Load(); calls != int64(st.Granted) {
		t.Fatalf("%d script calls for %d grants", calls, st.Granted)
	}
	if n, _ := r.Count(context.Background(), counters[0].Key); n != requests+unusedUnits(r) {
		t.Fatalf("Redis count %d, want %d admitted + %d held", n, requests, unusedUnits(r))
	}
}

// A set seen once per rate bucket never reserves.
func TestReservationSlowSetNeverReserves(t *testing.T) {
	pair, keys, hook := reservingPair(t, 20*time.Millisecond)
	r := pair[0]
	counters := []Counter{{Key: keys.User(1), Limit: 1000}}
	for range 10 {
		if res, err := r.Check(context.Background(), counters); err != nil || !res.Allowed {
			t.Fatalf("check: %+v %v", res, err)
		}
		time.Sleep(rateBucket + 10*time.Millisecond)
	}
	if n, _ := r.Count(context.Background(), counters[0].Key); n != 10 {
		t.Fatalf("Redis count %d after 10 slow requests, want 10", n)
	}
	if st := r.ReservationStats(); st.Granted != 0 || st.Local != 0 {
		t.Fatalf("a slow set reserved: %+v", st)
	}
	if calls := hook.evalsha.Load(); calls < 10 {
		t.Fatalf("%d script calls for 10 slow requests", calls)
	}
}

// Near the limit grants shrink to room/16 and stop: the last 31 units of
// a counter are checked one request at a time.
func TestReservationGrantBounds(t *testing.T) {
	pair, keys, _ := reservingPair(t, time.Hour)
	r := pair[0]
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 200}, {Key: keys.UserGroup(1, 2), Limit: 1000}}
	for _, tc := range []struct{ set, want, grant int64 }{
		{-1, 64, 12}, // 200/16
		{-1, 5, 5},   // the rate asks for less
		{-1, 64, 11}, // (200-17)/16
		{168, 64, 2}, // 32/16
		{-1, 64, 1},  // 30/16 < 2: a plain check
		{199, 64, 1}, // the last unit
		{-1, 64, 0},  // refused
		{-1, 1, 0},   // refused
	} {
		if tc.set >= 0 {
			setRawCount(t, r.client, counters[0].Key, tc.set)
		}
		before, err := r.Count(ctx, counters[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		gr, err := r.reserve.reserve(ctx, time.Time{}, counters, tc.want)
		if err != nil {
			t.Fatal(err)
		}
		if gr.units != tc.grant || gr.before[0] != before {
			t.Fatalf("at %d/200 asking %d: %+v, want a grant of %d", before, tc.want, gr, tc.grant)
		}
		after, _ := r.Count(ctx, counters[0].Key)
		if after != before+gr.units || after > 200 {
			t.Fatalf("count %d -> %d with a grant of %d", before, after, gr.units)
		}
		if gr.units == 0 && gr.denied != 0 {
			t.Fatalf("refusal: %+v, want the first counter full", gr)
		}
	}
	// A refusal may come from units reserved elsewhere: it is remembered
	// for a recheck interval only.
	res, err := r.Check(ctx, counters)
	if err != nil || res.Allowed || res.Denied != 0 || res.Counts[0] != 200 || res.RecheckIn != r.reserve.recheck() {
		t.Fatalf("at the limit: %+v, %v; want refused by the first counter at 200 with RecheckIn %v", res, err, r.reserve.recheck())
	}
}

// recheckLimiter is Local whose refusals carry a RecheckIn, as the Redis
// limiter's do with reservations on.
type recheckLimiter struct {
	*Local
	recheck time.Duration
}

func (r recheckLimiter) Check(ctx context.Context, cs []Counter) (Result, error) {
	res, err := r.Local.Check(ctx, cs)
	if err == nil && !res.Allowed {
		res.RecheckIn = r.recheck
	}
	return res, err
}

// A refusal with RecheckIn is remembered that long only, and the local
// refusals meanwhile still report the time left in the window.
func TestDenyCacheRecheckIn(t *testing.T) {
	clock := newFakeClock(minuteStart.Add(20 * time.Second))
	inner := &countingLimiter{Limiter: recheckLimiter{NewLocal(clock.Now), 60 * time.Millisecond}}
	d := NewDenyCache(inner, clock.Now)
	cs := []Counter{userCounter(Keys{Prefix: "deny:"}, 1, 2)}
	fill(t, d, cs, 2)
	before := inner.checks.Load()
	clock.Add(30 * time.Millisecond)
	res, err := d.Check(context.Background(), cs)
	if err != nil || res.Allowed || !res.Local || inner.checks.Load() != before {
		t.Fatalf("within RecheckIn: %+v %v (backend checks %d -> %d)", res, err, before, inner.checks.Load())
	}
	if want := 40*time.Second - 30*time.Millisecond; res.ResetIn != want {
		t.Fatalf("local refusal ResetIn %v, want %v (the window's end)", res.ResetIn, want)
	}
	clock.Add(40 * time.Millisecond)
	res, err = d.Check(context.Background(), cs)
	if err != nil || res.Allowed || res.Local || inner.checks.Load() != before+1 {
		t.Fatalf("after RecheckIn: %+v %v, want a backend refusal", res, err)
	}
}

// When a refusal held for RecheckIn lapses, one request rechecks with the
// backend, and the others are refused locally until its answer renews the
// entry, or drops it (here: an error), for one more RecheckIn at most.
func TestDenyCacheOneRecheckAtATime(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(minuteStart.Add(20 * time.Second))
	gate := &gatedLimiter{Limiter: recheckLimiter{NewLocal(clock.Now), 60 * time.Millisecond}, entered: make(chan struct{}, 8)}
	inner := &countingLimiter{Limiter: gate}
	d := NewDenyCache(inner, clock.Now)
	cs := []Counter{userCounter(Keys{Prefix: "deny:"}, 1, 2)}
	fill(t, d, cs, 2)
	checkAsync := func() chan Result {
		answer := make(chan Result, 1)
		go func() {
			res, _ := d.Check(ctx, cs)
			answer <- res
		}()
		<-gate.entered // at the backend
		return answer
	}
	wantLocal := func(when string) {
		t.Helper()
		before := inner.checks.Load()
		for range 3 {
			// Bounded: a check that reaches the backend waits at the gate.
			short, cancel := context.WithTimeout(ctx, time.Second)
			res, err := d.Check(short, cs)
			cancel()
			if err != nil || res.Allowed || !res.Local {
				t.Fatalf("%s: %+v %v, want a local refusal", when, res, err)
			}
		}
		if n := inner.checks.Load() - before; n != 0 {
			t.Fatalf("%s: %d backend checks, want 0", when, n)
		}
	}

	clock.Add(70 * time.Millisecond) // lapsed
	gate.hold()
	answer := checkAsync()
	wantLocal("while the recheck is out")
	gate.letGo()
	if res := <-answer; res.Allowed || res.Local {
		t.Fatalf("recheck: %+v, want a backend refusal", res)
	}
	wantLocal("after a recheck that refused")

	clock.Add(70 * time.Millisecond)
	inner.fail.Store(true)
	if _, err := d.Check(ctx, cs); err == nil {
		t.Fatal("recheck: no error from a failing backend")
	}
	before := inner.checks.Load()
	if _, err := d.Check(ctx, cs); err == nil || inner.checks.Load() != before+1 {
		t.Fatalf("after a failed recheck: err %v, backend checks %d -> %d; want the backend", err, before, inner.checks.Load())
	}
	inner.fail.Store(false)
	if res, _ := d.Check(ctx, cs); res.Allowed || res.Local {
		t.Fatalf("%+v, want a backend refusal", res)
	}

	// A recheck that takes longer than RecheckIn holds nobody longer.
	clock.Add(70 * time.Millisecond)
	gate.hold()
	first := checkAsync()
	clock.Add(60 * time.Millisecond)
	second := checkAsync() // entered the backend: not refused locally
	gate.letGo()
	for _, a := range []chan Result{first, second} {
		if res := <-a; res.Allowed || res.Local {
			t.Fatalf("%+v, want a backend refusal", res)
		}
	}
}

// gatedLimiter holds each Check, once hold is called, until letGo.
type gatedLimiter struct {
	Limiter
	entered chan struct{} // a Check is held
	mu      sync.Mutex
	open    chan struct{} // nil: Check goes through
}

func (g *gatedLimiter) Check(ctx context.Context, cs []Counter) (Result, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if open != nil {
		g.entered <- struct{}{}
		select {
		case <-open:
		case <-ctx.Done():
			return Result{Denied: -1}, ctx.Err()
		}
	}
	return g.Limiter.Check(ctx, cs)
}

func (g *gatedLimiter) hold() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedLimiter) letGo() {
	g.mu.Lock()
	close(g.open)
	g.open = nil
	g.mu.Unlock()
}

// oneConnLimiter is a Redis limiter with reservations (and opts) on a
// client of a single connection to the shared Redis, its scripts loaded, at
// a point of the window with at least minRemaining left; occupy makes that
// connection busy.
func oneConnLimiter(t *testing.T, opts ...RedisOption) (*Redis, *redis.Client, Keys) {
	t.Helper()
	c0, keys := singleClient(t)
	c := redis.NewClient(&redis.Options{Addr: redistest.SharedAddr, ContextTimeoutEnabled: true, PoolSize: 1})
	t.Cleanup(func() { c.Close() })
	r := NewRedis(c, append([]RedisOption{WithReservations(time.Hour)}, opts...)...)
	t.Cleanup(func() { r.Close() })
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	redistest.WaitForWindow(t, c0, minRemaining)
	return r, c, keys
}

// occupy keeps c's only connection busy for d (a blocking pop of a list
// that stays empty) from 50 ms after the call on; the channel closes when
// it is free again.
func occupy(c *redis.Client, keys Keys, d time.Duration) <-chan struct{} {
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		// BLPop would round d up to whole seconds.
		c.Do(context.Background(), "BLPOP", keys.Prefix+"nothing", strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
	}()
	time.Sleep(50 * time.Millisecond)
	return busy
}

// Requests waiting for another's refill get its answer even when that
// request's caller leaves before the call could go out (here: waiting for
// the client's only connection): the refill is not cancelled with it.
func TestReservationRefillOutlivesItsCaller(t *testing.T) {
	r, c, keys := oneConnLimiter(t)
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 10000}}
	busy := occupy(c, keys, 300*time.Millisecond)
	e := hotSet(r, counters)
	e.mu.Lock()
	e.bucket, e.prev, e.lastGrant = time.Now(), 10, 10 // hot: others wait for a refill
	e.mu.Unlock()
	leaving, leave := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() {
		_, err := r.Check(leaving, counters)
		first <- err
	}()
	waitFor(t, time.Second, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.refill != nil
	}, "refill in flight")
	type outcome struct {
		res Result
		err error
	}
	second := make(chan outcome, 1)
	go func() {
		res, err := r.Check(ctx, counters)
		second <- outcome{res, err}
	}()
	waitFor(t, time.Second, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.refill != nil && e.refill.waiters == 1
	}, "a waiter")
	leave()
	<-busy
	got := <-second
	if got.err != nil || !got.res.Allowed {
		t.Fatalf("the waiter got %+v, %v", got.res, got.err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the refill failed: %v", err)
	}
	if st := r.ReservationStats(); st.Local != 1 || st.Granted != 1 {
		t.Fatalf("stats %+v, want one grant and one local admission", st)
	}
}

// A grant fetched ahead that arrives after Forget dropped its set is
// handed back whole, like the units the set held: Redis ends up counting
// exactly what was admitted.
func TestReservationRefillAheadAfterForget(t *testing.T) {
	r, c, keys := oneConnLimiter(t)
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 10000, UserID: 1}}
	primeRate(r, counters, 10)
	check := func() {
		t.Helper()
		if res, err := r.Check(ctx, counters); err != nil || !res.Allowed {
			t.Fatalf("check: %+v %v", res, err)
		}
	}
	check()                                       // a grant of 10
	busy := occupy(c, keys, 300*time.Millisecond) // the refill ahead waits
	primeRate(r, counters, 10)                    // still hot, however long occupy took
	e := hotSet(r, counters)
	for range 4 {
		check() // local
	}
	e.mu.Lock()
	ahead := e.refill != nil && e.refill.ahead
	held := e.units
	e.mu.Unlock()
	if !ahead || held != 5 {
		t.Fatalf("refill ahead out: %v, units %d; want one out with 5 units left", ahead, held)
	}
	r.Forget(1, 0)
	<-busy
	waitFor(t, 2*time.Second, func() bool {
		n, err := r.Count(ctx, counters[0].Key)
		return err == nil && n == 5
	}, "Redis count back to the 5 admitted")
	if st := r.ReservationStats(); st.Granted != 2 || st.HandedBack <= uint64(held) {
		t.Fatalf("%+v: want two grants, the second handed back with the %d units held", st, held)
	}
}

// A refill ahead that fails (here: no connection free within its timeout)
// costs no request anything: the set's requests go on with the units left,
// none goes ahead again, the request that finds the units gone refills
// itself, and its grant turns refilling ahead back on.
func TestReservationRefillAheadFails(t *testing.T) {
	r, c, keys := oneConnLimiter(t, WithLeases(LeaseConfig{Timeout: 100 * time.Millisecond}))
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 10000}}
	primeRate(r, counters, 10)
	check := func() {
		t.Helper()
		if res, err := r.Check(ctx, counters); err != nil || !res.Allowed {
			t.Fatalf("check: %+v %v", res, err)
		}
	}
	refillOut := func() bool {
		e := hotSet(r, counters)
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.refill != nil
	}
	check() // a grant of 10
	busy := occupy(c, keys, 400*time.Millisecond)
	primeRate(r, counters, 10) // still hot, however long occupy took
	for range 4 {
		check() // local; the last one leaves 5 and goes ahead
	}
	waitFor(t, time.Second, func() bool { return !refillOut() }, "failed refill ahead")
	if st := r.ReservationStats(); st.Unanswered != 1 || st.Granted != 1 {
		t.Fatalf("%+v: want the refill ahead unanswered", st)
	}
	for i := range 5 {
		check()
		if refillOut() {
			t.Fatalf("local admission %d after the failure went ahead again", i+1)
		}
	}
	<-busy
	primeRate(r, counters, 10) // still hot after the wait
	check()                    // the units are gone: a refill of its own
	if st := r.ReservationStats(); st.Granted != 2 || st.Local != 9 {
		t.Fatalf("%+v: want the request's own refill granted after 9 local admissions", st)
	}
	for i := 0; !refillOut(); i++ {
		if i == 20 {
			t.Fatal("no refill ahead after the request's own refill was granted")
		}
		check()
	}
}

// A request that finds its units gone while a refill ahead is out waits
// for it no longer than for a call of its own: the refill ends by the
// redis timeout of the request that started it, not the lease timeout.
func TestReservationRefillAheadKeepsTheDeadline(t *testing.T) {
	r, c, keys := oneConnLimiter(t)
	const timeout = 100 * time.Millisecond
	g := NewGuarded(r, timeout, nil)
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 10000}}
	primeRate(r, counters, 10)
	if res, err := g.Check(ctx, counters); err != nil || !res.Allowed {
		t.Fatalf("first check: %+v %v", res, err)
	}
	busy := occupy(c, keys, 600*time.Millisecond)
	defer func() { <-busy }()
	for i := range 9 {
		// Local; the fourth leaves 5 units and starts a refill ahead,
		// which waits for the busy connection.
		if res, err := g.Check(ctx, counters); err != nil || !res.Allowed {
			t.Fatalf("local check %d: %+v %v", i+1, res, err)
		}
	}
	start := time.Now()
	_, err := g.Check(ctx, counters) // no units left: waits for the refill
	if waited := time.Since(start); err == nil || waited > 2*timeout {
		t.Fatalf("waited %v for the refill ahead (%v); want its error within %v", waited, err, 2*timeout)
	}
}

// On a Redis Cluster, two instances with reservations admit exactly the
// limit of a user's counters, and hand idle units back.
func TestReservationsCluster(t *testing.T) {
	c, keys := clusterClient(t)
	ttl := 100 * time.Millisecond
	var pair [2]*Redis
	for i := range pair {
		pair[i] = NewRedis(c, WithReservations(ttl))
		t.Cleanup(func() { pair[i].Close() })
	}
	redistest.WaitForWindow(t, c, minRemaining)
	// Two users, so two hash slots (and likely two nodes).
	var total [2]atomic.Int64
	sets := [2][]Counter{
		{{Key: keys.User(1), Limit: 600}, {Key: keys.UserGroup(1, 1), Limit: 900}},
		{{Key: keys.User(2), Limit: 700}},
	}
	var wg sync.WaitGroup
	for u, cs := range sets {
		for _, r := range pair {
			wg.Add(1)
			go func() {
				defer wg.Done()
				total[u].Add(drive(t, r, 8, cs))
			}()
		}
	}
	wg.Wait()
	for u, cs := range sets {
		waitFor(t, 2*time.Second, func() bool {
			n, err := pair[0].Count(context.Background(), cs[0].Key)
			if err == nil && n != total[u].Load() {
				// Units came back: take them.
				total[u].Add(drive(t, pair[1], 1, cs))
			}
			return err == nil && n == total[u].Load()
		}, "the counts at the admitted totals")
		if got := total[u].Load(); got != cs[0].Limit {
			t.Fatalf("user %d: admitted %d, want %d", u+1, got, cs[0].Limit)
		}
	}
	if st := pair[0].ReservationStats(); st.Local == 0 {
		t.Fatalf("no local admission: %+v", st)
	}
}

// TestReservationMinGrant: a set seen fewer than minGrant times in the
// last rateBucket is checked in Redis, one unit per request, since a grant
// is a call of its own and checks share calls; at minGrant it takes a
// grant of that many units.
func TestReservationMinGrant(t *testing.T) {
	r, _, keys := oneConnLimiter(t)
	ctx := context.Background()
	counters := []Counter{{Key: keys.User(1), Limit: 10000, UserID: 1}}
	check := func() {
		t.Helper()
		if res, err := r.Check(ctx, counters); err != nil || !res.Allowed {
			t.Fatalf("check: %+v %v", res, err)
		}
	}
	count := func() int64 {
		t.Helper()
		n, err := r.Count(ctx, counters[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	primeRate(r, counters, minGrant-1)
	check()
	if st := r.ReservationStats(); st.Granted != 0 || count() != 1 {
		t.Fatalf("below minGrant: %+v, count %d; want no grant and a count of 1", st, count())
	}
	primeRate(r, counters, minGrant)
	check()
	if st := r.ReservationStats(); st.Granted != 1 || count() != 1+minGrant {
		t.Fatalf("at minGrant: %+v, count %d; want one grant of %d", st, count(), minGrant)
	}
}
