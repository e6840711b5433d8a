package gateway

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
)

// TestLimitsThatApply checks which limits apply to a request in each case
// of the limit rules, with which scope and value: the user's limit, then
// the (user, group) layer, where an override replaces the group's limit
// and an override of 0 exempts the user; a limit of 0 is no limit.
func TestLimitsThatApply(t *testing.T) {
	type want struct {
		scope LimitScope
		limit int64
	}
	for _, tc := range []struct {
		name        string
		override    *int64
		group, user int64
		withGroup   bool
		want        []want
	}{
		{"no override, no limits", nil, 0, 0, true, nil},
		{"no override, group limit", nil, 10, 20, true, []want{{LimitUser, 20}, {LimitGroup, 10}}},
		{"no override, group limit, no user limit", nil, 10, 0, true, []want{{LimitGroup, 10}}},
		{"override 0 exempts from the group", testutil.Ptr[int64](0), 10, 5, true, []want{{LimitUser, 5}}},
		{"override 0 and no user limit", testutil.Ptr[int64](0), 10, 0, true, nil},
		{"override replaces the group limit", testutil.Ptr[int64](7), 100, 20, true, []want{{LimitUser, 20}, {LimitOverride, 7}}},
		{"override with group limit 0", testutil.Ptr[int64](7), 0, 0, true, []want{{LimitOverride, 7}}},
		{"key without group", nil, 0, 4, false, []want{{LimitUser, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := &answering{res: limiter.Result{Allowed: true, Denied: -1}}
			g := newTestGateway(t, lim, false)
			d := g.Check(context.Background(), snap(tc.override, tc.group, tc.user, tc.withGroup), nil)
			var got []want
			for _, l := range d.Limits() {
				got = append(got, want{l.Scope, l.Limit})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("limits %v, want %v", got, tc.want)
			}
			if len(lim.asked) != len(tc.want) {
				t.Fatalf("the limiter was asked about %d counters, want %d", len(lim.asked), len(tc.want))
			}
			for i, c := range lim.asked {
				if c.Limit != tc.want[i].limit {
					t.Errorf("counter %d limit %d, want %d", i, c.Limit, tc.want[i].limit)
				}
			}
			if len(tc.want) == 0 && d.Outcome != Admitted {
				t.Errorf("no limit applies: outcome %v, want Admitted", d.Outcome)
			}
		})
	}
}

// TestCounterKeys: every counter of a user is named under the user's hash
// tag (one Redis Cluster slot), route counters by zone, per key by key id.
func TestCounterKeys(t *testing.T) {
	lim := &answering{res: limiter.Result{Allowed: true, Denied: -1}}
	g := newTestGateway(t, lim, false)
	route := []RouteLimit{{Zone: "img", Scope: LimitRouteUser, Limit: 3}, {Zone: "img", Scope: LimitRouteKey, Limit: 2}}
	d := g.Check(context.Background(), snap(nil, 10, 50, true), route)
	wantKeys := []string{"p:{u7}:user", "p:{u7}:group:2", "p:{u7}:zone:img:user", "p:{u7}:zone:img:key:3"}
	if len(lim.asked) != len(wantKeys) {
		t.Fatalf("got %d counters, want %d", len(lim.asked), len(wantKeys))
	}
	for i, c := range lim.asked {
		if c.Key != wantKeys[i] || c.UserID != 7 || c.GroupID != 2 {
			t.Errorf("counter %d = %+v, want key %q, user 7, group 2", i, c, wantKeys[i])
		}
	}
	if l := d.Limits()[3]; l.Scope != LimitRouteKey || l.Zone != "img" || l.Limit != 2 {
		t.Errorf("route limit %+v", l)
	}
}

func TestCheckRoute(t *testing.T) {
	for name, tc := range map[string]struct {
		zone   string
		limits []RouteLimit
		want   string
	}{
		"ok":            {"img", []RouteLimit{{"img", LimitRouteUser, 3}, {"img", LimitRouteKey, 1}}, ""},
		"zone only":     {"img", nil, ""},
		"none":          {"", nil, ""},
		"no zone":       {"", []RouteLimit{{"", LimitRouteUser, 3}}, "needs a zone"},
		"zero":          {"img", []RouteLimit{{"img", LimitRouteUser, 0}}, "at least 1"},
		"duplicate":     {"img", []RouteLimit{{"img", LimitRouteKey, 3}, {"img", LimitRouteKey, 4}}, "duplicate limit for scope 'key'"},
		"data scope":    {"img", []RouteLimit{{"img", LimitUser, 3}}, "must be user or key"},
		"reserved user": {"user", nil, "zone 'user' is reserved"},
		"reserved grp":  {"group", nil, "zone 'group' is reserved"},
		"bad chars":     {"a b", nil, "letters"},
		"too long":      {strings.Repeat("z", 65), nil, "1-64"},
		"other zone":    {"img", []RouteLimit{{"txt", LimitRouteUser, 3}}, "listed under zone"},
	} {
		err := CheckRoute(tc.zone, tc.limits)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

// TestCheckRouteNamesTheLimitAtFault: the error says which limit (or the
// zone, -1) is at fault, so a Caddyfile error can name its line.
func TestCheckRouteNamesTheLimitAtFault(t *testing.T) {
	ok := RouteLimit{"img", LimitRouteUser, 3}
	for _, tc := range []struct {
		zone   string
		limits []RouteLimit
		want   int
	}{
		{"a b", []RouteLimit{ok}, -1},
		{"img", []RouteLimit{ok, {"img", LimitRouteKey, 0}}, 1},
		{"img", []RouteLimit{ok, {"img", LimitRouteKey, 1}, {"img", LimitRouteUser, 4}}, 2},
	} {
		var re *RouteError
		if err := CheckRoute(tc.zone, tc.limits); !errors.As(err, &re) || re.Limit != tc.want {
			t.Errorf("CheckRoute(%q, %v) = %v, want a RouteError at %d", tc.zone, tc.limits, err, tc.want)
		}
	}
}
