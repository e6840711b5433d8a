package gateway

import (
	"net/netip"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// Refusal is why a key's snapshot refuses a request before any limit is
// counted; NotRefused lets it on to Check.
type Refusal uint8

// The refusals of Authorize, in the order they are checked.
const (
	NotRefused Refusal = iota
	// UnknownKey: no key of the store has this hash.
	UnknownKey
	// KeyDisabled: the key's status is not active.
	KeyDisabled
	// KeyExpired: the key's expiry has passed.
	KeyExpired
	// QuotaExhausted: the key has used up its quota.
	QuotaExhausted
	// IPNotAllowed: the client address fails the key's IP lists (or the
	// lists cannot be read).
	IPNotAllowed
	// UserDisabled: the key's user is missing or not active.
	UserDisabled
	// GroupDisabled: the key's group is not active.
	GroupDisabled
)

// Authorize applies the authentication rules to a request of the key
// whose snapshot is s at now from client address ip, in order: the key is
// known, active, not expired, within its quota, allowed from ip, and its
// user and group are active. ip is only read when the key has IP lists
// (snapshot.Snapshot.HasIPRules), so callers may skip finding it
// otherwise.
func Authorize(s *snapshot.Snapshot, now time.Time, ip netip.Addr) Refusal {
	switch {
	case s.NotFound:
		return UnknownKey
	case s.Status != "active":
		return KeyDisabled
	case s.Expired(now):
		return KeyExpired
	case s.QuotaExhausted():
		return QuotaExhausted
	case s.HasIPRules() && !s.IPAllowed(ip):
		return IPNotAllowed
	case s.User == nil || s.User.Status != "active":
		return UserDisabled
	case s.Group != nil && s.Group.Status != "active":
		return GroupDisabled
	}
	return NotRefused
}
