package caddyrpm

import (
	"reflect"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

func ptr(v int64) *int64 { return &v }

// TestCountersFollowTheLimitTable checks which counters each row of the
// spec's §6 table applies, and with which limit.
func TestCountersFollowTheLimitTable(t *testing.T) {
	h := &Handler{app: &App{keys: limiter.Keys{Prefix: "p:"}}}
	snap := func(override *int64, groupLimit, userLimit int64, withGroup bool) *snapshot.Snapshot {
		s := &snapshot.Snapshot{APIKeyID: 3, UserID: 7,
			User: &snapshot.User{ID: 7, Status: "active", RPMLimit: userLimit, UserGroupRPMOverride: override}}
		if withGroup {
			s.GroupID = ptr(2)
			s.Group = &snapshot.Group{ID: 2, Status: "active", RPMLimit: groupLimit}
		}
		return s
	}
	type want struct {
		policy string
		limit  int64
	}
	for _, tc := range []struct {
		name string
		snap *snapshot.Snapshot
		want []want
	}{
		{"no override, no limits", snap(nil, 0, 0, true), nil},
		{"no override, group limit", snap(nil, 10, 20, true), []want{{"user", 20}, {"group", 10}}},
		{"no override, group limit, no user limit", snap(nil, 10, 0, true), []want{{"group", 10}}},
		{"override 0 exempts from the group", snap(ptr(0), 10, 5, true), []want{{"user", 5}}},
		{"override 0 and no user limit", snap(ptr(0), 10, 0, true), nil},
		{"override replaces the group limit", snap(ptr(7), 100, 20, true), []want{{"user", 20}, {"group", 7}}},
		{"override with group limit 0", snap(ptr(7), 0, 0, true), []want{{"group", 7}}},
		{"key without group", snap(nil, 0, 4, false), []want{{"user", 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []want
			for _, c := range h.counters(tc.snap) {
				got = append(got, want{c.Policy, c.Limit})
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("counters %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRouteCountersShareTheUsersSlot(t *testing.T) {
	h := &Handler{app: &App{keys: limiter.Keys{Prefix: "p:"}}, Zone: "img",
		Limits: []RouteLimit{{Scope: "user", Limit: 3}, {Scope: "key", Limit: 2}}}
	s := &snapshot.Snapshot{APIKeyID: 3, UserID: 7, User: &snapshot.User{ID: 7, RPMLimit: 50}}
	cs := h.counters(s)
	wantKeys := []string{"p:{u7}:user", "p:{u7}:zone:img:user", "p:{u7}:zone:img:key:3"}
	if len(cs) != len(wantKeys) {
		t.Fatalf("got %d counters, want %d", len(cs), len(wantKeys))
	}
	for i, c := range cs {
		if c.Key != wantKeys[i] {
			t.Errorf("counter %d key %q, want %q", i, c.Key, wantKeys[i])
		}
	}
	if cs[1].Code != codeRouteRPM || cs[1].Policy != "img" {
		t.Errorf("route counter %+v", cs[1])
	}
}

func TestResetSecondsBounds(t *testing.T) {
	for d, want := range map[int64]int64{0: 1, 1: 1, 999e6: 1, 1001e6: 2, 59e9: 59, 60e9: 60, 61e9: 60} {
		if got := resetSeconds(durationOf(d)); got != want {
			t.Errorf("resetSeconds(%v) = %d, want %d", durationOf(d), got, want)
		}
	}
}

func durationOf(ns int64) time.Duration { return time.Duration(ns) }
