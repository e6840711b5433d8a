package store

import (
	"encoding/hex"
	"fmt"
	"math"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// The statuses of users, groups and keys.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// completeSnapshot finishes the snapshot of a key whose own fields and
// user are filled (from SQL or from the keys file): g is the key's group,
// nil for none, which becomes the snapshot's own, and override the user's override in that group, nil for
// none. Both stores end with it, so they agree on every field. It always
// leaves s usable; the error reports an IP list entry that is not an
// address or range, in which case s admits no client
// (snapshot.Snapshot.Prepare).
func completeSnapshot(s *snapshot.Snapshot, g *snapshot.Group, override *int64) error {
	s.Version = snapshot.Version
	s.User.ID = s.UserID
	s.User.UserGroupRPMOverride = nil
	s.Group = g
	if g != nil {
		s.User.UserGroupRPMOverride = override
	}
	if err := s.Prepare(); err != nil {
		return fmt.Errorf("api key %d: %w", s.APIKeyID, err)
	}
	return nil
}

// decodeKeyHash parses a lowercase (or uppercase) hex SHA-256 into dst.
func decodeKeyHash(dst *[32]byte, keyHash string) bool {
	if len(keyHash) != 2*len(dst) {
		return false
	}
	_, err := hex.Decode(dst[:], []byte(keyHash))
	return err == nil
}

// validStatus reports whether s is a status a record may have.
func validStatus(s string) bool { return s == StatusActive || s == StatusDisabled }

// validLimit reports whether v fits a limit or override column (integer >= 0).
func validLimit(v int64) bool { return v >= 0 && v <= math.MaxInt32 }

// validatePatch checks a patch's values; withLimit says whether the record
// has an rpm_limit at all.
func validatePatch(p Patch, withLimit bool) error {
	if p.RPMLimit != nil {
		if !withLimit {
			return fmt.Errorf("%w: rpm_limit cannot be set on an api key", ErrInvalid)
		}
		if !validLimit(*p.RPMLimit) {
			return fmt.Errorf("%w: rpm_limit must be between 0 and %d, got %d", ErrInvalid, math.MaxInt32, *p.RPMLimit)
		}
	}
	if p.Status != nil && !validStatus(*p.Status) {
		return fmt.Errorf("%w: status must be %q or %q, got %q", ErrInvalid, StatusActive, StatusDisabled, *p.Status)
	}
	return nil
}
