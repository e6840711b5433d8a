package gateway

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// LimitScope says what a limit caps: the user, the user in a group (by the
// group's limit or the user's override in it), or a route zone per user or
// per API key; and whether it caps requests per minute or requests in
// flight (a concurrency cap, see Concurrency).
type LimitScope uint8

// The scopes of a limit.
const (
	// LimitUser caps all of a user's requests, across their keys and groups.
	LimitUser LimitScope = iota + 1
	// LimitGroup caps a user's requests in a group at the group's limit.
	LimitGroup
	// LimitOverride caps a user's requests in a group at the user's
	// override, which replaces the group's limit for that user.
	LimitOverride
	// LimitRouteUser caps a user's requests through a route zone.
	LimitRouteUser
	// LimitRouteKey caps an API key's requests through a route zone.
	LimitRouteKey
	// LimitConcurrencyUser caps a user's requests in flight, across their
	// keys and routes (the user's concurrency).
	LimitConcurrencyUser
	// LimitRouteConcurrencyUser caps a user's requests in flight through a
	// route zone.
	LimitRouteConcurrencyUser
	// LimitRouteConcurrencyKey caps an API key's requests in flight through
	// a route zone.
	LimitRouteConcurrencyKey
)

// Concurrency reports whether the scope caps requests in flight rather
// than requests per minute.
func (s LimitScope) Concurrency() bool { return s >= LimitConcurrencyUser }

// route reports whether the scope is one of a route zone's.
func (s LimitScope) route() bool {
	switch s {
	case LimitRouteUser, LimitRouteKey, LimitRouteConcurrencyUser, LimitRouteConcurrencyKey:
		return true
	}
	return false
}

// MaxCounters is the most counters one request is checked against: the
// user, the (user, group) layer and a zone's per-user and per-key limits.
const MaxCounters = 4

// MaxCaps is the most concurrency caps one request is checked against:
// the user's and a zone's per-user and per-key caps.
const MaxCaps = 3

// RouteLimit is one limit of a route zone: handlers (and instances) that
// name the same zone share its counters and slot sets.
type RouteLimit struct {
	// Zone names the counters and slot sets.
	Zone string
	// Scope is LimitRouteUser or LimitRouteKey (requests per minute), or
	// LimitRouteConcurrencyUser or LimitRouteConcurrencyKey (requests in
	// flight).
	Scope LimitScope
	// Limit is the number of requests per minute, or of requests in flight
	// at once for a concurrency scope; at least 1.
	Limit int64
}

// Per is the unit a route limit counts, "user" or "key" (its name in
// configurations and in rpm-status).
func (l RouteLimit) Per() string {
	if l.Scope == LimitRouteKey || l.Scope == LimitRouteConcurrencyKey {
		return "key"
	}
	return "user"
}

// kind is what a route limit is called in errors: "limit" (per minute)
// or "concurrency", as in configurations.
func (l RouteLimit) kind() string {
	if l.Scope.Concurrency() {
		return "concurrency"
	}
	return "limit"
}

var zoneName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// CheckZone validates a zone name: 1-64 letters, digits, '.', '_' or '-',
// and not a data limit's policy name ("user", "group"), which the
// rate-limit headers use.
func CheckZone(zone string) error {
	if !zoneName.MatchString(zone) {
		return fmt.Errorf("zone '%s' must be 1-64 letters, digits, '.', '_' or '-'", zone)
	}
	if zone == "user" || zone == "group" {
		return fmt.Errorf("zone '%s' is reserved for the data limits' policy names", zone)
	}
	return nil
}

// RouteError is an invalid route: Limit is the index of the limit at
// fault, -1 when the zone is.
type RouteError struct {
	Limit int
	Err   error
}

func (e *RouteError) Error() string { return e.Err.Error() }

func (e *RouteError) Unwrap() error { return e.Err }

// CheckRoute validates the route limits of one zone (a *RouteError): a
// valid zone name (CheckZone), at most one limit per scope (a per-minute
// limit and a concurrency cap of one unit are two scopes), each at least 1
// and of that zone.
func CheckRoute(zone string, limits []RouteLimit) error {
	if zone == "" {
		if len(limits) > 0 {
			return &RouteError{0, errors.New("a route limit needs a zone")}
		}
		return nil
	}
	if err := CheckZone(zone); err != nil {
		return &RouteError{-1, err}
	}
	var seen [LimitRouteConcurrencyKey + 1]bool
	for i, l := range limits {
		var err error
		switch {
		case !l.Scope.route():
			err = errors.New("route limit scope must be user or key")
		case l.Zone != zone:
			err = fmt.Errorf("route limit of zone '%s' listed under zone '%s'", l.Zone, zone)
		case seen[l.Scope]:
			err = fmt.Errorf("duplicate %s for scope '%s'", l.kind(), l.Per())
		case l.Limit < 1:
			err = fmt.Errorf("route %s %s must be at least 1, not %d", l.kind(), l.Per(), l.Limit)
		}
		if err != nil {
			return &RouteError{i, err}
		}
		seen[l.Scope] = true
	}
	return nil
}

// policy holds the rules that turn a user's data and a route's limits
// into counters. The request path and rpm-status both use it, so they
// cannot disagree on which limit applies or how its counter is named.
type policy struct {
	counterKeys limiter.Keys
}

// groupLimit is the limit of a user in a group: the user's override when
// set (0 exempts the user in this group), else the group's limit.
func groupLimit(group int64, override *int64) (int64, LimitScope) {
	if override != nil {
		return *override, LimitOverride
	}
	return group, LimitGroup
}

// counterKey names the counter of a limit of user uid; gid is the group of
// the (user, group) layer, zone and keyID those of route limits.
func (p *policy) counterKey(scope LimitScope, uid, gid int64, zone string, keyID int64) string {
	switch scope {
	case LimitUser:
		return p.counterKeys.User(uid)
	case LimitGroup, LimitOverride:
		return p.counterKeys.UserGroup(uid, gid)
	case LimitRouteUser:
		return p.counterKeys.ZoneUser(zone, uid)
	default:
		return p.counterKeys.ZoneKey(zone, uid, keyID)
	}
}

// counters lists the limits that apply to a request with the snapshot s
// through a route with the given limits: the user's limit, the (user,
// group) layer and the route limits; a limit of 0 is no limit. It records
// each limit in d and returns the counters to check, in the same order.
func (p *policy) counters(s *snapshot.Snapshot, route []RouteLimit, d *Decision) []limiter.Counter {
	var gid int64
	if s.Group != nil {
		gid = s.Group.ID
	}
	if s.User.RPMLimit > 0 {
		d.add(LimitUser, "", s.User.RPMLimit)
	}
	if s.Group != nil {
		if limit, scope := groupLimit(s.Group.RPMLimit, s.User.UserGroupRPMOverride); limit > 0 {
			d.add(scope, "", limit)
		}
	}
	for _, l := range route {
		if !l.Scope.Concurrency() {
			d.add(l.Scope, l.Zone, l.Limit)
		}
	}
	if d.n == 0 {
		return nil
	}
	cs := make([]limiter.Counter, d.n)
	for i, l := range d.limits[:d.n] {
		cs[i] = limiter.Counter{Key: p.counterKey(l.Scope, s.UserID, gid, l.Zone, s.APIKeyID),
			Limit: l.Limit, UserID: s.UserID, GroupID: gid}
	}
	return cs
}

// slotKey names the slot set of a concurrency cap of user uid; zone and
// keyID are those of route caps.
func (p *policy) slotKey(scope LimitScope, uid int64, zone string, keyID int64) string {
	switch scope {
	case LimitConcurrencyUser:
		return p.counterKeys.UserSlots(uid)
	case LimitRouteConcurrencyUser:
		return p.counterKeys.ZoneUserSlots(zone, uid)
	default:
		return p.counterKeys.ZoneKeySlots(zone, uid, keyID)
	}
}

// slots lists the concurrency caps that apply to a request with the
// snapshot s through a route with the given limits: the user's
// concurrency (0 is no cap) and the route's caps. It records each cap in
// d and returns the slot sets to take a place in, in the same order; nil
// (no allocation) when no cap applies.
func (p *policy) slots(s *snapshot.Snapshot, route []RouteLimit, d *Decision) []limiter.Slot {
	if s.User.Concurrency > 0 {
		d.addCap(LimitConcurrencyUser, "", s.User.Concurrency)
	}
	for _, l := range route {
		if l.Scope.Concurrency() {
			d.addCap(l.Scope, l.Zone, l.Limit)
		}
	}
	if d.nc == 0 {
		return nil
	}
	ss := make([]limiter.Slot, d.nc)
	for i, c := range d.caps[:d.nc] {
		ss[i] = limiter.Slot{Key: p.slotKey(c.Scope, s.UserID, c.Zone, s.APIKeyID), Limit: c.Limit, UserID: s.UserID}
	}
	return ss
}

// addCap records a concurrency cap that applies, with all of it free
// until the limiter answers.
func (d *Decision) addCap(scope LimitScope, zone string, limit int64) {
	if d.nc == MaxCaps {
		return // CheckRoute allows no more
	}
	d.caps[d.nc] = Limit{Scope: scope, Zone: zone, Limit: limit, Remaining: limit}
	d.nc++
}

// add records a limit that applies, with all of it remaining until the
// limiter answers.
func (d *Decision) add(scope LimitScope, zone string, limit int64) {
	if d.n == MaxCounters {
		return // CheckRoute allows no more
	}
	d.limits[d.n] = Limit{Scope: scope, Zone: zone, Limit: limit, Remaining: limit}
	d.n++
}
