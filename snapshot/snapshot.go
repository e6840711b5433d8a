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

	whitelist []netip.Prefix
	blacklist []netip.Prefix
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
	if err := s.Prepare(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Prepare parses the IP lists once so that request-time checks allocate
// nothing. Stores call it on every snapshot they build.
func (s *Snapshot) Prepare() error {
	var err error
	if s.whitelist, err = parsePrefixes(s.IPWhitelist); err != nil {
		return fmt.Errorf("ip_whitelist: %w", err)
	}
	if s.blacklist, err = parsePrefixes(s.IPBlacklist); err != nil {
		return fmt.Errorf("ip_blacklist: %w", err)
	}
	return nil
}

// HasIPRules reports whether the key has a white- or blacklist, so callers
// can skip finding the client IP when it has neither.
func (s *Snapshot) HasIPRules() bool { return len(s.whitelist) > 0 || len(s.blacklist) > 0 }

// IPAllowed reports whether ip passes the key's white- and blacklist.
func (s *Snapshot) IPAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	if len(s.whitelist) > 0 && !containsIP(s.whitelist, ip) {
		return false
	}
	return !containsIP(s.blacklist, ip)
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
