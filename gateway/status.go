package gateway

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/caddyrpm/caddy-rpm/store"
)

// Status is a user's limits and current-window counts (the answer of
// rpm-status). A limit of 0 means unlimited. Used counts are Redis's:
// with reservations they include units that any instance reserved and
// has not used yet; Reserved counts are this instance's share of those.
type Status struct {
	UserID      int64 `json:"user_id"`
	UserRPMUsed int64 `json:"user_rpm_used"`
	// UserRPMReserved is the part of UserRPMUsed that this instance
	// holds reserved and has not used yet.
	UserRPMReserved int64 `json:"user_rpm_reserved"`
	UserRPMLimit    int64 `json:"user_rpm_limit"`
	// Concurrency is the user's cap on requests in flight, 0 for none.
	Concurrency int64 `json:"concurrency"`
	// InFlight is the number of the user's requests holding a place under
	// that cap, across instances; always 0 without a cap (requests are
	// then not tracked).
	InFlight       int64         `json:"in_flight"`
	PerGroup       []GroupStatus `json:"per_group"`
	PerZone        []ZoneStatus  `json:"per_zone"`
	WindowResetsIn int64         `json:"window_resets_in"`
	WindowResetsAt time.Time     `json:"window_resets_at"`
}

// GroupStatus is one group of a user in Status.
type GroupStatus struct {
	GroupID   int64  `json:"group_id"`
	GroupName string `json:"group_name"`
	Used      int64  `json:"used"`
	// Reserved is the part of Used this instance holds reserved, unused.
	Reserved int64 `json:"reserved"`
	Limit    int64 `json:"limit"`
	// Source is "override" when the user's override sets Limit, else
	// "group".
	Source string `json:"source"`
}

// ZoneStatus is one route zone and unit ("user" or "key") in Status:
// its limit per minute and its concurrency cap (0 for none). Used,
// Reserved and InFlight are the user's count, the part of it this
// instance holds reserved and unused, and the requests in flight in the
// zone, for the per-user unit; per-key ones count each key separately, so
// they report none of them (the limits still show).
type ZoneStatus struct {
	Name        string `json:"name"`
	Scope       string `json:"scope"`
	Used        *int64 `json:"used,omitempty"`
	Reserved    *int64 `json:"reserved,omitempty"`
	Limit       int64  `json:"limit"`
	Concurrency int64  `json:"concurrency,omitempty"`
	InFlight    *int64 `json:"in_flight,omitempty"`
}

// Status reads a user's limits from the store (not the snapshot cache) and
// their counts from the limiter without counting anything. Route zones are
// those declared on this instance (DeclareRoute).
func (g *Gateway) Status(ctx context.Context, uid int64) (*Status, error) {
	u, err := g.source.UserRPM(ctx, uid)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(u.Groups, func(a, b store.UserGroup) int { return cmp.Compare(a.GroupID, b.GroupID) })
	zones := g.routeLimits()

	// The counters, named as the request path names them: the user's,
	// one per group, one per per-user zone.
	p := &g.policy
	keys := make([]string, 0, 1+len(u.Groups)+len(zones))
	keys = append(keys, p.counterKey(LimitUser, uid, 0, "", 0))
	for _, gr := range u.Groups {
		_, scope := groupLimit(gr.RPMLimit, gr.Override)
		keys = append(keys, p.counterKey(scope, uid, gr.GroupID, "", 0))
	}
	// The slot sets: the user's, then one per per-user zone cap.
	sets := []string{p.slotKey(LimitConcurrencyUser, uid, "", 0)}
	zoneCount := make([]int, len(zones))
	for i, z := range zones {
		zoneCount[i] = -1
		switch z.Scope {
		case LimitRouteUser:
			zoneCount[i] = len(keys)
			keys = append(keys, p.counterKey(z.Scope, uid, 0, z.Zone, 0))
		case LimitRouteConcurrencyUser:
			zoneCount[i] = len(sets)
			sets = append(sets, p.slotKey(z.Scope, uid, z.Zone, 0))
		}
	}
	counts, resetIn, err := g.limiter.Peek(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCountersUnavailable, err)
	}
	reserved := g.limiter.Reserved(keys)
	// Without any cap no request is tracked: nothing to ask Redis.
	held := make([]int64, len(sets))
	if u.Concurrency > 0 || len(sets) > 1 {
		if held, err = g.limiter.PeekSlots(ctx, sets); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCountersUnavailable, err)
		}
	}

	st := &Status{
		UserID:          uid,
		UserRPMUsed:     counts[0],
		UserRPMReserved: reserved[0],
		UserRPMLimit:    u.RPMLimit,
		Concurrency:     u.Concurrency,
		InFlight:        held[0],
		PerGroup:        make([]GroupStatus, 0, len(u.Groups)),
		PerZone:         make([]ZoneStatus, 0, len(zones)),
	}
	for i, gr := range u.Groups {
		limit, scope := groupLimit(gr.RPMLimit, gr.Override)
		source := "group"
		if scope == LimitOverride {
			source = "override"
		}
		st.PerGroup = append(st.PerGroup, GroupStatus{GroupID: gr.GroupID, GroupName: gr.Name,
			Used: counts[1+i], Reserved: reserved[1+i], Limit: limit, Source: source})
	}
	// One entry per zone and unit, with its limit and its cap; zones are
	// sorted by name, then unit.
	for i, z := range zones {
		n := len(st.PerZone)
		if n == 0 || st.PerZone[n-1].Name != z.Zone || st.PerZone[n-1].Scope != z.Per() {
			st.PerZone = append(st.PerZone, ZoneStatus{Name: z.Zone, Scope: z.Per()})
			n++
		}
		zs := &st.PerZone[n-1]
		j := zoneCount[i]
		if z.Scope.Concurrency() {
			zs.Concurrency = z.Limit
			if j >= 0 {
				zs.InFlight = &held[j]
			}
			continue
		}
		zs.Limit = z.Limit
		if j >= 0 {
			zs.Used, zs.Reserved = &counts[j], &reserved[j]
		}
	}
	st.WindowResetsIn = ResetSeconds(resetIn)
	st.WindowResetsAt = time.Now().Add(resetIn).UTC().Truncate(time.Second)
	return st, nil
}
