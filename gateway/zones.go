package gateway

import (
	"cmp"
	"slices"
	"sync"
)

// zoneRegistry records the route limits the handlers of a configuration
// declare, for rpm-status.
type zoneRegistry struct {
	mu     sync.Mutex
	limits map[zoneScope]RouteLimit
}

type zoneScope struct {
	zone  string
	scope LimitScope
}

// DeclareRoute records a route's limits for Status. Handlers may share a
// zone with different limits; Status reports the strictest, which is the
// one that binds.
func (g *Gateway) DeclareRoute(limits []RouteLimit) {
	z := &g.zones
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.limits == nil {
		z.limits = map[zoneScope]RouteLimit{}
	}
	for _, l := range limits {
		k := zoneScope{l.Zone, l.Scope}
		if old, ok := z.limits[k]; !ok || l.Limit < old.Limit {
			z.limits[k] = l
		}
	}
}

// routeLimits lists the declared route limits by zone, per-user first.
func (g *Gateway) routeLimits() []RouteLimit {
	z := &g.zones
	z.mu.Lock()
	defer z.mu.Unlock()
	out := make([]RouteLimit, 0, len(z.limits))
	for _, l := range z.limits {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b RouteLimit) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Per(), b.Per()))
	})
	return out
}
