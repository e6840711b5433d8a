package gateway

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
)

// route is a zone "img" limited to 5 per user.
var route = []RouteLimit{{Zone: "img", Scope: LimitRouteUser, Limit: 5}}

func TestCheckAdmitted(t *testing.T) {
	lim := &answering{res: limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9, 2}, ResetIn: 36200 * time.Millisecond}}
	d := newTestGateway(t, lim, false).Check(context.Background(), snap(nil, 10, 20, true), route)
	if d.Outcome != Admitted || d.Refusing != -1 {
		t.Fatalf("outcome %v refusing %d, want Admitted -1", d.Outcome, d.Refusing)
	}
	var remaining []int64
	for _, l := range d.Limits() {
		remaining = append(remaining, l.Remaining)
	}
	if want := []int64{17, 1, 3}; !slices.Equal(remaining, want) {
		t.Errorf("remaining %v, want %v", remaining, want)
	}
	if d.ResetSeconds() != 37 {
		t.Errorf("reset %d s, want 37 (rounded up)", d.ResetSeconds())
	}
	if _, ok := d.Refusal(); ok {
		t.Error("an admitted request has a refusal")
	}
}

// An admission from units reserved ahead is local, as a refusal by the
// deny cache is: the limiter's backend was not asked.
func TestCheckLocalAdmission(t *testing.T) {
	for _, local := range []bool{false, true} {
		lim := &answering{res: limiter.Result{Allowed: true, Denied: -1, Counts: []int64{3, 9, 2}, ResetIn: time.Second, Local: local}}
		d := newTestGateway(t, lim, false).Check(context.Background(), snap(nil, 10, 20, true), route)
		if d.Outcome != Admitted || d.Local != local {
			t.Fatalf("limiter's Local %v: outcome %v, local %v; want Admitted, %v", local, d.Outcome, d.Local, local)
		}
	}
}

func TestCheckRefused(t *testing.T) {
	// A refused request's counts are not incremented; remaining never goes
	// below 0.
	lim := &answering{res: limiter.Result{Denied: 1, Counts: []int64{4, 12, 0}, ResetIn: 500 * time.Millisecond, Local: true}}
	d := newTestGateway(t, lim, false).Check(context.Background(), snap(testutil.Ptr[int64](10), 50, 20, true), route)
	l, ok := d.Refusal()
	if d.Outcome != Refused || !ok || !d.Local {
		t.Fatalf("outcome %v, refusal %v, local %v; want Refused, true, true", d.Outcome, ok, d.Local)
	}
	if l.Scope != LimitOverride || l.Limit != 10 || l.Remaining != 0 {
		t.Errorf("refusing limit %+v, want the override of 10 with 0 left", l)
	}
	if d.ResetSeconds() != 1 {
		t.Errorf("reset %d s, want 1", d.ResetSeconds())
	}
}

func TestCheckLimiterFailure(t *testing.T) {
	fail := errors.New("redis down")
	for name, tc := range map[string]struct {
		failClosed, cancel bool
		want               Outcome
	}{
		"fail open":          {false, false, AdmittedFailOpen},
		"fail closed":        {true, false, Unavailable},
		"client gone (open)": {false, true, Abandoned},
		"client gone":        {true, true, Abandoned},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			lim := &answering{err: fail}
			d := newTestGateway(t, lim, tc.failClosed).Check(ctx, snap(nil, 10, 20, true), nil)
			if d.Outcome != tc.want || !errors.Is(d.Err, fail) {
				t.Fatalf("outcome %v err %v, want %v and the limiter's error", d.Outcome, d.Err, tc.want)
			}
			for _, l := range d.Limits() {
				if l.Remaining != l.Limit {
					t.Errorf("limit %+v: remaining without an answer must be the limit", l)
				}
			}
		})
	}
}

func TestStrictest(t *testing.T) {
	for _, tc := range []struct {
		counts []int64
		want   int
	}{
		{[]int64{0, 0, 0}, 2},   // limits 20, 10, 5: the zone has the least room
		{[]int64{19, 0, 0}, 0},  // user has 1 left
		{[]int64{10, 10, 0}, 1}, // group full
		{[]int64{15, 5, 0}, 2},  // all 5 left: the smallest limit wins the tie
	} {
		lim := &answering{res: limiter.Result{Allowed: true, Denied: -1, Counts: tc.counts}}
		d := newTestGateway(t, lim, false).Check(context.Background(), snap(nil, 10, 20, true), route)
		if got := d.Strictest(); got != tc.want {
			t.Errorf("Strictest with counts %v = %d, want %d", tc.counts, got, tc.want)
		}
	}
	if got := (&Decision{}).Strictest(); got != -1 {
		t.Errorf("Strictest without limits = %d, want -1", got)
	}
}

func TestResetSecondsBounds(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 1, 1: 1, 999 * time.Millisecond: 1, 1001 * time.Millisecond: 2,
		59 * time.Second: 59, 60 * time.Second: 60, 61 * time.Second: 60} {
		if got := ResetSeconds(d); got != want {
			t.Errorf("ResetSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestShadowAdmitsOnlyLimitRefusals(t *testing.T) {
	refusing := &answering{res: limiter.Result{Denied: 2, Counts: []int64{4, 9, 5}, ResetIn: time.Second}}
	d := newTestGateway(t, refusing, false).Check(context.Background(), snap(nil, 10, 20, true), route)
	d.Shadow()
	l, ok := d.Refusal()
	if d.Outcome != ShadowRefused || !ok || l.Scope != LimitRouteUser || l.Remaining != 0 {
		t.Fatalf("outcome %v, refusal %+v %v; want ShadowRefused by the zone's limit with 0 left", d.Outcome, l, ok)
	}

	// Every other outcome stays as it is: shadow mode observes limits, it
	// does not change how an admission or a Redis failure is handled.
	for name, lim := range map[string]*answering{
		"admitted":    {res: limiter.Result{Allowed: true, Denied: -1, Counts: []int64{1, 1, 1}}},
		"fail closed": {err: errors.New("redis down")},
	} {
		d := newTestGateway(t, lim, true).Check(context.Background(), snap(nil, 10, 20, true), route)
		before := d.Outcome
		d.Shadow()
		if d.Outcome != before {
			t.Errorf("%s: Shadow changed %v into %v", name, before, d.Outcome)
		}
	}
}
