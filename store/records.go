package store

import (
	"encoding/hex"
	"fmt"
	"math"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// The statuses of users, groups and keys.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
)

// keyRow, userRow and groupRow hold the columns of one record that an auth
// snapshot needs. Both stores fill them (from SQL or from the keys file) and
// build snapshots with buildSnapshot, so the two agree field by field.
type keyRow struct {
	ID          int64
	UserID      int64
	GroupID     *int64
	Status      string
	IPWhitelist []string
	IPBlacklist []string
	Quota       float64
	QuotaUsed   float64
	ExpiresAt   *time.Time
}

type userRow struct {
	ID          int64
	Status      string
	Role        string
	RPMLimit    int64
	Concurrency int64
	Balance     float64
}

type groupRow struct {
	ID       int64
	Name     string
	Platform string
	Status   string
	RPMLimit int64
}

// buildSnapshot assembles and prepares the snapshot of key k. g is nil when
// the key has no group; override is the user's override in that group, nil
// when there is none. It always returns the snapshot; the error reports an
// IP list entry that is not an address or range, in which case the
// snapshot admits no client (snapshot.Snapshot.Prepare).
func buildSnapshot(k *keyRow, u *userRow, g *groupRow, override *int64) (*snapshot.Snapshot, error) {
	s := &snapshot.Snapshot{
		Version:     snapshot.Version,
		APIKeyID:    k.ID,
		UserID:      k.UserID,
		GroupID:     k.GroupID,
		Status:      k.Status,
		IPWhitelist: k.IPWhitelist,
		IPBlacklist: k.IPBlacklist,
		Quota:       k.Quota,
		QuotaUsed:   k.QuotaUsed,
		ExpiresAt:   k.ExpiresAt,
		User: &snapshot.User{
			ID:          u.ID,
			Status:      u.Status,
			Role:        u.Role,
			RPMLimit:    u.RPMLimit,
			Concurrency: u.Concurrency,
			Balance:     u.Balance,
		},
	}
	if g != nil {
		s.Group = &snapshot.Group{
			ID:       g.ID,
			Name:     g.Name,
			Platform: g.Platform,
			Status:   g.Status,
			RPMLimit: g.RPMLimit,
		}
		s.User.UserGroupRPMOverride = override
	}
	if err := s.Prepare(); err != nil {
		return s, fmt.Errorf("api key %d: %w", k.ID, err)
	}
	return s, nil
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
