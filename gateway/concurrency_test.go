package gateway

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

// acquiring is a limiter that answers every CheckAcquire with res, lease
// and err, and records what it was asked; Check is counted separately.
type acquiring struct {
	limiter.Acquirer
	res          limiter.AcquireResult
	lease        *limiter.Lease
	err          error
	counters     []limiter.Counter
	slots        []limiter.Slot
	checks, acqs int
}

func (a *acquiring) Check(_ context.Context, cs []limiter.Counter) (limiter.Result, error) {
	a.checks++
	a.counters = cs
	return limiter.Result{Allowed: true, Denied: -1, Counts: make([]int64, len(cs))}, nil
}

func (a *acquiring) CheckAcquire(_ context.Context, cs []limiter.Counter, ss []limiter.Slot) (limiter.AcquireResult, *limiter.Lease, error) {
	a.acqs++
	a.counters, a.slots = cs, ss
	return a.res, a.lease, a.err
}

// TestNoCapIsAPlainCheck: without any concurrency cap the gateway makes
// the plain Check it made before caps existed, and no lease comes back.
func TestNoCapIsAPlainCheck(t *testing.T) {
	lim := &acquiring{}
	d := newTestGateway(t, lim, false).Check(context.Background(), snap(nil, 10, 20, true), route)
	if lim.checks != 1 || lim.acqs != 0 {
		t.Fatalf("%d Check and %d CheckAcquire calls, want 1 and 0", lim.checks, lim.acqs)
	}
	if d.Outcome != Admitted || d.Lease != nil || len(d.Caps()) != 0 || d.RefusingCap != -1 {
		t.Fatalf("decision %+v, want admitted without caps or lease", d)
	}
}

// TestCapsThatApply: the user's concurrency (0 = none) and a route's caps
// apply, in that order, each a slot set under the user's hash tag; the
// route's per-minute limits stay counters.
func TestCapsThatApply(t *testing.T) {
	lim := &acquiring{res: limiter.AcquireResult{Result: limiter.Result{Allowed: true, Denied: -1},
		DeniedSlot: -1, InFlight: []int64{1, 2, 1}}}
	g := newTestGateway(t, lim, false)
	s := snap(nil, 10, 20, true)
	s.User.Concurrency = 4
	route := []RouteLimit{{"img", LimitRouteUser, 5}, {"img", LimitRouteConcurrencyUser, 3}, {"img", LimitRouteConcurrencyKey, 1}}
	d := g.Check(context.Background(), s, route)
	if lim.acqs != 1 || lim.checks != 0 {
		t.Fatalf("%d CheckAcquire and %d Check calls, want 1 and 0", lim.acqs, lim.checks)
	}
	wantSlots := []limiter.Slot{{Key: "p:{u7}:slots:user", Limit: 4, UserID: 7},
		{Key: "p:{u7}:slots:zone:img:user", Limit: 3, UserID: 7}, {Key: "p:{u7}:slots:zone:img:key:3", Limit: 1, UserID: 7}}
	if !reflect.DeepEqual(lim.slots, wantSlots) {
		t.Errorf("slots %+v, want %+v", lim.slots, wantSlots)
	}
	if len(lim.counters) != 3 || lim.counters[2].Key != "p:{u7}:zone:img:user" {
		t.Errorf("counters %+v, want user, group and the zone's per-user limit", lim.counters)
	}
	type capWant struct {
		scope                LimitScope
		limit, in, remaining int64
	}
	var got []capWant
	for _, c := range d.Caps() {
		got = append(got, capWant{c.Scope, c.Limit, c.InFlight, c.Remaining})
	}
	want := []capWant{{LimitConcurrencyUser, 4, 1, 3}, {LimitRouteConcurrencyUser, 3, 2, 1}, {LimitRouteConcurrencyKey, 1, 1, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("caps %+v, want %+v", got, want)
	}
	if len(d.Limits()) != 3 {
		t.Errorf("%d per-minute limits, want 3 (caps are not among them)", len(d.Limits()))
	}
}

// TestConcurrencyWithTheLocalLimiter: a user with concurrency 2 holds two
// requests at once; the third is refused by the cap, names it with its
// limit and the requests in flight, and takes nothing; a release frees a
// place at once. A counter that is full is reported before the cap.
func TestConcurrencyWithTheLocalLimiter(t *testing.T) {
	lim := limiter.NewLocal(time.Now)
	g := newTestGateway(t, lim, false)
	s := cappedSnap(3, 2)
	ctx := context.Background()

	a, b := g.Check(ctx, s, nil), g.Check(ctx, s, nil)
	if a.Outcome != Admitted || b.Outcome != Admitted || a.Lease == nil || b.Lease == nil {
		t.Fatalf("first two: %v %v, leases %v %v; want admitted with leases", a.Outcome, b.Outcome, a.Lease, b.Lease)
	}
	c := g.Check(ctx, s, nil)
	l, ok := c.Refusal()
	if c.Outcome != Refused || !ok || c.Lease != nil || c.Refusing != -1 || c.RefusingCap != 0 {
		t.Fatalf("third: outcome %v refusal %v lease %v refusing %d/%d; want refused by cap 0 without lease",
			c.Outcome, ok, c.Lease, c.Refusing, c.RefusingCap)
	}
	if l.Scope != LimitConcurrencyUser || l.Limit != 2 || l.InFlight != 2 || l.Remaining != 0 {
		t.Errorf("refusing cap %+v, want the user's 2 with 2 in flight", l)
	}
	if n := lim.InFlight(); n != 2 {
		t.Errorf("%d leases held, want 2", n)
	}
	// The refused request took nothing: the user's per-minute limit of 3
	// has 1 left, which the next admitted request takes.
	a.Lease.Release()
	a.Lease.Release() // a second release gives nothing back
	d := g.Check(ctx, s, nil)
	if d.Outcome != Admitted || d.Limits()[0].Remaining != 0 {
		t.Fatalf("after a release: %v with %d left of the user's 3, want admitted with 0 left", d.Outcome, d.Limits()[0].Remaining)
	}
	// Now both the counter and the cap are full: the counter is reported.
	e := g.Check(ctx, s, nil)
	if l, _ := e.Refusal(); e.Outcome != Refused || e.Refusing != 0 || e.RefusingCap != -1 || l.Scope != LimitUser {
		t.Errorf("counter and cap full: refusing %d/%d %+v, want the user's per-minute limit", e.Refusing, e.RefusingCap, l)
	}
	b.Lease.Release()
	d.Lease.Release()
	if n := lim.InFlight(); n != 0 {
		t.Errorf("%d leases held after every release, want 0", n)
	}
}

// TestRouteKeyCapIsPerKey: a route cap per key holds one request of each
// key; other keys of the same user are not affected.
func TestRouteKeyCapIsPerKey(t *testing.T) {
	g := newTestGateway(t, limiter.NewLocal(time.Now), false)
	route := []RouteLimit{{"chat", LimitRouteConcurrencyKey, 1}}
	k3, k4 := snap(nil, 0, 0, false), snap(nil, 0, 0, false)
	k4.APIKeyID = 4
	ctx := context.Background()
	first := g.Check(ctx, k3, route)
	defer first.Lease.Release()
	if r := g.Check(ctx, k3, route); r.Outcome != Refused {
		t.Fatalf("second request of key 3: %v, want Refused", r.Outcome)
	} else if l, _ := r.Refusal(); l.Scope != LimitRouteConcurrencyKey || l.Zone != "chat" {
		t.Errorf("refusal %+v, want the zone chat's per-key cap", l)
	}
	other := g.Check(ctx, k4, route)
	defer other.Lease.Release()
	if other.Outcome != Admitted {
		t.Errorf("key 4 of the same user: %v, want Admitted", other.Outcome)
	}
}

// TestShadowedCapHoldsNoPlace: in shadow mode a request past a full cap is
// admitted without a lease, and the cap's set keeps only the admitted.
func TestShadowedCapHoldsNoPlace(t *testing.T) {
	lim := limiter.NewLocal(time.Now)
	g := newTestGateway(t, lim, false)
	s := cappedSnap(0, 1)
	ctx := context.Background()
	held := g.Check(ctx, s, nil)
	defer held.Lease.Release()
	d := g.Check(ctx, s, nil)
	d.Shadow()
	if l, ok := d.Refusal(); d.Outcome != ShadowRefused || !ok || l.Scope != LimitConcurrencyUser || d.Lease != nil {
		t.Fatalf("outcome %v refusal %+v lease %v, want ShadowRefused by the user's cap without a lease", d.Outcome, l, d.Lease)
	}
	if n := lim.InFlight(); n != 1 {
		t.Errorf("%d leases held, want 1: a shadow admission takes no place", n)
	}
}

// TestCapsWhenTheLimiterFails: with caps, a limiter that cannot be asked
// fails open (admitted without a lease) or closed exactly as without.
func TestCapsWhenTheLimiterFails(t *testing.T) {
	fail := errors.New("redis down")
	for _, failClosed := range []bool{false, true} {
		lim := &acquiring{res: limiter.AcquireResult{Result: limiter.Result{Denied: -1}, DeniedSlot: -1}, err: fail}
		s := cappedSnap(10, 2)
		d := newTestGateway(t, lim, failClosed).Check(context.Background(), s, nil)
		want := AdmittedFailOpen
		if failClosed {
			want = Unavailable
		}
		if d.Outcome != want || d.Lease != nil || !errors.Is(d.Err, fail) {
			t.Errorf("fail closed %v: outcome %v lease %v err %v, want %v without a lease", failClosed, d.Outcome, d.Lease, d.Err, want)
		}
		if c := d.Caps()[0]; c.Remaining != 2 || c.InFlight != 0 {
			t.Errorf("cap without an answer %+v, want all of it remaining and nothing known in flight", c)
		}
	}
}
