// Package snapshot defines the auth snapshot: everything the rpm handler
// needs to decide on a request, in one cached record.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Version is the only snapshot version this code serves. Entries of any other
// version are treated as cache misses and overwritten.
const Version = 7

// ErrVersion reports a snapshot that was encoded by another version.
var ErrVersion = errors.New("snapshot version mismatch")

// Snapshot is the cached auth record of one API key (APIKeyAuthSnapshot).
// A Snapshot with NotFound set is a negative entry: the key is unknown.
type Snapshot struct {
	Version     int        `json:"version"`
	NotFound    bool       `json:"not_found,omitempty"`
	APIKeyID    int64      `json:"api_key_id,omitempty"`
	UserID      int64      `json:"user_id,omitempty"`
	GroupID     *int64     `json:"group_id,omitempty"`
	Status      string     `json:"status,omitempty"`
	IPWhitelist []string   `json:"ip_whitelist,omitempty"`
	IPBlacklist []string   `json:"ip_blacklist,omitempty"`
	Quota       float64    `json:"quota,omitempty"`
	QuotaUsed   float64    `json:"quota_used,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	User        *User      `json:"user,omitempty"`
	Group       *Group     `json:"group,omitempty"`

	// ip holds the parsed IP lists; nil when the key has none. One pointer
	// rather than the lists themselves keeps the snapshots of keys without
	// IP rules (most of them) small in L1.
	ip *ipRules
}

// ipRules are a snapshot's parsed IP lists.
type ipRules struct {
	whitelist []netip.Prefix
	blacklist []netip.Prefix
	// invalid is set when an IP list has an entry that is not an address
	// or range: the key then admits no client (fail closed).
	invalid bool
}

// User is the user sub-snapshot. UserGroupRPMOverride is the user's override
// in the key's group: nil means none, 0 exempts the user from the group
// layer, and a positive value replaces the group's limit for this user.
type User struct {
	ID                   int64   `json:"id"`
	Status               string  `json:"status"`
	Role                 string  `json:"role,omitempty"`
	RPMLimit             int64   `json:"rpm_limit"`
	UserGroupRPMOverride *int64  `json:"user_group_rpm_override,omitempty"`
	Concurrency          int64   `json:"concurrency,omitempty"`
	Balance              float64 `json:"balance,omitempty"`
}

// Group is the group sub-snapshot.
type Group struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Platform string `json:"platform,omitempty"`
	Status   string `json:"status"`
	RPMLimit int64  `json:"rpm_limit"`
}

// Negative returns a negative entry for an unknown key.
func Negative() *Snapshot { return &Snapshot{Version: Version, NotFound: true} }

// Encode serializes s with the current version.
func Encode(s *Snapshot) ([]byte, error) {
	s.Version = Version
	return json.Marshal(s)
}

// Decode parses an encoded snapshot. It fails on malformed input and on any
// version other than Version, so stale formats are never served.
func Decode(b []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("%w: got %d, want %d", ErrVersion, s.Version, Version)
	}
	// An invalid IP list entry leaves the snapshot failing closed (see
	// Prepare); the store that built it has reported the entry.
	_ = s.Prepare()
	return &s, nil
}

// Prepare parses the IP lists once so that request-time checks allocate
// nothing. Stores call it on every snapshot they build. An entry that is
// not an IP address or CIDR range is an error, and the snapshot then fails
// closed: IPAllowed refuses every client, so a list that cannot be read
// never widens access.
func (s *Snapshot) Prepare() error {
	s.ip = nil
	white, err := parsePrefixes(s.IPWhitelist)
	if err != nil {
		s.ip = &ipRules{invalid: true}
		return fmt.Errorf("ip_whitelist: %w", err)
	}
	black, err := parsePrefixes(s.IPBlacklist)
	if err != nil {
		s.ip = &ipRules{invalid: true}
		return fmt.Errorf("ip_blacklist: %w", err)
	}
	if len(white) > 0 || len(black) > 0 {
		s.ip = &ipRules{whitelist: white, blacklist: black}
	}
	return nil
}

// HasIPRules reports whether the key has a white- or blacklist (or an
// unreadable one), so callers can skip finding the client IP when it has
// neither.
func (s *Snapshot) HasIPRules() bool { return s.ip != nil }

// IPAllowed reports whether ip passes the key's white- and blacklist. IPv4
// clients match IPv4 entries whether they connect over IPv4 or as
// IPv4-mapped IPv6; entries are unmapped the same way (see parsePrefixes).
func (s *Snapshot) IPAllowed(ip netip.Addr) bool {
	r := s.ip
	if r == nil {
		return true
	}
	if r.invalid {
		return false
	}
	ip = ip.Unmap()
	if len(r.whitelist) > 0 && !containsIP(r.whitelist, ip) {
		return false
	}
	return !containsIP(r.blacklist, ip)
}

// Expired reports whether the key has expired at now.
func (s *Snapshot) Expired(now time.Time) bool {
	return s.ExpiresAt != nil && !now.Before(*s.ExpiresAt)
}

// QuotaExhausted reports whether a finite quota is used up.
func (s *Snapshot) QuotaExhausted() bool { return s.Quota > 0 && s.QuotaUsed >= s.Quota }

func containsIP(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parsePrefixes parses IP list entries: addresses and CIDR ranges, IPv4 or
// IPv6. IPv4-mapped IPv6 entries are unmapped, as client addresses are:
// ::ffff:127.0.0.1 is 127.0.0.1 and ::ffff:127.0.0.0/104 is 127.0.0.0/8. A
// mapped range shorter than 96 bits reaches beyond the IPv4 space, has no
// IPv4 equivalent and is refused.
func parsePrefixes(items []string) ([]netip.Prefix, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(items))
	for _, item := range items {
		item = strings.TrimSpace(item)
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, err
			}
			if a := p.Addr(); a.Is4In6() {
				if p.Bits() < 96 {
					return nil, fmt.Errorf("%q: an IPv4-mapped range needs a prefix length of at least 96", item)
				}
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, err
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
