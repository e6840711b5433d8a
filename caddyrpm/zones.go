package caddyrpm

import (
	"sort"
	"sync"

	"github.com/caddyrpm/caddy-rpm/admin"
)

// zoneRegistry records the route zones the handlers of a config declare,
// for rpm-status.
type zoneRegistry struct {
	mu    sync.Mutex
	zones map[string]admin.Zone
}

func newZoneRegistry() *zoneRegistry { return &zoneRegistry{zones: map[string]admin.Zone{}} }

func (z *zoneRegistry) add(name string, limits []RouteLimit) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, l := range limits {
		zone := admin.Zone{Name: name, Scope: l.Scope, Limit: l.Limit}
		key := name + "|" + l.Scope
		// Handlers may share a zone with different caps; report the
		// strictest, which is what binds.
		if old, ok := z.zones[key]; !ok || zone.Limit < old.Limit {
			z.zones[key] = zone
		}
	}
}

func (z *zoneRegistry) list() []admin.Zone {
	z.mu.Lock()
	defer z.mu.Unlock()
	out := make([]admin.Zone, 0, len(z.zones))
	for _, zone := range z.zones {
		out = append(out, zone)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Scope < out[j].Scope
	})
	return out
}
