package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// File is the read-only store loaded from a keys_file JSON document. It
// keeps only the SHA-256 of each key, never the raw key. It is a Source
// only: having no Writable is what makes it read-only.
type File struct {
	users     map[int64]*snapshot.User
	groups    map[int64]*snapshot.Group
	keys      map[[32]byte]*fileEntry
	keyByID   map[int64][32]byte
	overrides map[[2]int64]int64 // (user id, group id) → override
	id        string             // StoreID: a hash of the content
}

// fileEntry is one key's prebuilt snapshot.
type fileEntry struct {
	snap *snapshot.Snapshot
}

var _ Source = (*File)(nil)

// fileDoc is the keys_file format: users, groups, API keys (raw or as
// SHA-256) and (user, group) RPM overrides.
type fileDoc struct {
	Users        []fileUser     `json:"users"`
	Groups       []fileGroup    `json:"groups"`
	APIKeys      []fileKey      `json:"api_keys"`
	RPMOverrides []fileOverride `json:"rpm_overrides"`
}

type fileUser struct {
	ID          int64   `json:"id"`
	Username    string  `json:"username"`
	Email       string  `json:"email"`
	Status      string  `json:"status"`
	Role        string  `json:"role"`
	RPMLimit    int64   `json:"rpm_limit"`
	Concurrency int64   `json:"concurrency"`
	Balance     float64 `json:"balance"`
}

type fileGroup struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Platform string `json:"platform"`
	Status   string `json:"status"`
	RPMLimit int64  `json:"rpm_limit"`
}

type fileKey struct {
	ID          int64      `json:"id"`
	Key         string     `json:"key"`
	KeySHA256   string     `json:"key_sha256"`
	KeyPrefix   string     `json:"key_prefix"`
	Name        string     `json:"name"`
	UserID      int64      `json:"user_id"`
	GroupID     *int64     `json:"group_id"`
	Status      string     `json:"status"`
	IPWhitelist []string   `json:"ip_whitelist"`
	IPBlacklist []string   `json:"ip_blacklist"`
	Quota       float64    `json:"quota"`
	QuotaUsed   float64    `json:"quota_used"`
	ExpiresAt   *time.Time `json:"expires_at"`
}

type fileOverride struct {
	UserID      int64  `json:"user_id"`
	GroupID     int64  `json:"group_id"`
	RPMOverride *int64 `json:"rpm_override"`
}

// LoadFile reads and validates a keys_file. Errors name the offending
// record, e.g. "api_keys[2]: unknown user_id 7".
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys_file: %w", err)
	}
	f, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("keys_file %s: %w", path, err)
	}
	return f, nil
}

// ParseFile parses a keys_file document; see LoadFile.
func ParseFile(data []byte) (*File, error) {
	var doc fileDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse: unexpected data after the JSON document")
	}

	f := &File{
		users:     make(map[int64]*snapshot.User, len(doc.Users)),
		groups:    make(map[int64]*snapshot.Group, len(doc.Groups)),
		keys:      make(map[[32]byte]*fileEntry, len(doc.APIKeys)),
		keyByID:   make(map[int64][32]byte, len(doc.APIKeys)),
		overrides: make(map[[2]int64]int64, len(doc.RPMOverrides)),
		id:        shortID("keys_file", string(data)),
	}
	for i, u := range doc.Users {
		where := fmt.Sprintf("users[%d]", i)
		_, used := f.users[u.ID]
		status, err := checkFileRecord(u.ID, used, u.Status, u.RPMLimit)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if !validLimit(u.Concurrency) {
			return nil, fmt.Errorf("%s: concurrency must be between 0 and %d", where, math.MaxInt32)
		}
		f.users[u.ID] = &snapshot.User{ID: u.ID, Status: status, Role: u.Role, RPMLimit: u.RPMLimit,
			Concurrency: u.Concurrency, Balance: u.Balance}
	}
	names := make(map[string]int64, len(doc.Groups))
	for i, g := range doc.Groups {
		where := fmt.Sprintf("groups[%d]", i)
		_, used := f.groups[g.ID]
		status, err := checkFileRecord(g.ID, used, g.Status, g.RPMLimit)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if g.Name == "" {
			g.Name = fmt.Sprintf("group-%d", g.ID)
		}
		if other, dup := names[g.Name]; dup {
			return nil, fmt.Errorf("%s: name %q is also used by group %d", where, g.Name, other)
		}
		names[g.Name] = g.ID
		f.groups[g.ID] = &snapshot.Group{ID: g.ID, Name: g.Name, Platform: g.Platform, Status: status, RPMLimit: g.RPMLimit}
	}
	for i, o := range doc.RPMOverrides {
		where := fmt.Sprintf("rpm_overrides[%d]", i)
		if _, ok := f.users[o.UserID]; !ok {
			return nil, fmt.Errorf("%s: unknown user_id %d", where, o.UserID)
		}
		if _, ok := f.groups[o.GroupID]; !ok {
			return nil, fmt.Errorf("%s: unknown group_id %d", where, o.GroupID)
		}
		if o.RPMOverride == nil || !validLimit(*o.RPMOverride) {
			return nil, fmt.Errorf("%s: rpm_override must be an integer between 0 and %d", where, math.MaxInt32)
		}
		k := [2]int64{o.UserID, o.GroupID}
		if _, dup := f.overrides[k]; dup {
			return nil, fmt.Errorf("%s: duplicate override for user %d in group %d", where, o.UserID, o.GroupID)
		}
		f.overrides[k] = *o.RPMOverride
	}
	for i, k := range doc.APIKeys {
		where := fmt.Sprintf("api_keys[%d]", i)
		if err := f.addKey(k); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return f, nil
}

func (f *File) addKey(k fileKey) error {
	if k.ID <= 0 {
		return errors.New("id must be a positive integer")
	}
	if _, dup := f.keyByID[k.ID]; dup {
		return fmt.Errorf("duplicate id %d", k.ID)
	}
	var hash [32]byte
	switch {
	case k.Key != "" && k.KeySHA256 != "":
		return errors.New("give either key or key_sha256, not both")
	case k.Key != "":
		// A key no client can send would sit in the file unusable.
		if err := CheckKeyShape(k.Key); err != nil {
			return fmt.Errorf("key: %w", err)
		}
		hash = sha256.Sum256([]byte(k.Key))
	case k.KeySHA256 != "":
		if !decodeKeyHash(&hash, k.KeySHA256) {
			return errors.New("key_sha256 must be 64 hex characters")
		}
	default:
		return errors.New("key or key_sha256 is required")
	}
	if _, dup := f.keys[hash]; dup {
		return errors.New("duplicate key")
	}
	u, ok := f.users[k.UserID]
	if !ok {
		return fmt.Errorf("unknown user_id %d", k.UserID)
	}
	var g *snapshot.Group
	var override *int64
	if k.GroupID != nil {
		if g, ok = f.groups[*k.GroupID]; !ok {
			return fmt.Errorf("unknown group_id %d", *k.GroupID)
		}
		if v, ok := f.overrides[[2]int64{k.UserID, g.ID}]; ok {
			override = &v
		}
	}
	status, err := fileStatus(k.Status)
	if err != nil {
		return err
	}
	if k.Quota < 0 {
		return errors.New("quota must not be negative")
	}
	user := *u
	s := &snapshot.Snapshot{
		APIKeyID: k.ID, UserID: k.UserID, GroupID: k.GroupID, Status: status,
		IPWhitelist: k.IPWhitelist, IPBlacklist: k.IPBlacklist,
		Quota: k.Quota, QuotaUsed: k.QuotaUsed, ExpiresAt: k.ExpiresAt,
		User: &user,
	}
	if g != nil {
		group := *g // the snapshot's own, like its user
		g = &group
	}
	if err := completeSnapshot(s, g, override); err != nil {
		return err
	}
	f.keys[hash] = &fileEntry{snap: s}
	f.keyByID[k.ID] = hash
	return nil
}

// checkFileRecord checks what a users and a groups record share: a
// positive id that no earlier record of its kind has (used), a valid
// status and an rpm_limit in range. It returns the status, "" read as
// active.
func checkFileRecord(id int64, used bool, status string, rpmLimit int64) (string, error) {
	if id <= 0 {
		return "", errors.New("id must be a positive integer")
	}
	if used {
		return "", fmt.Errorf("duplicate id %d", id)
	}
	status, err := fileStatus(status)
	if err != nil {
		return "", err
	}
	if !validLimit(rpmLimit) {
		return "", fmt.Errorf("rpm_limit must be between 0 and %d", math.MaxInt32)
	}
	return status, nil
}

func fileStatus(s string) (string, error) {
	if s == "" {
		return StatusActive, nil
	}
	if !validStatus(s) {
		return "", fmt.Errorf("status must be %q or %q, got %q", StatusActive, StatusDisabled, s)
	}
	return s, nil
}

// LoadSnapshot implements Source. Each call returns a fresh copy.
func (f *File) LoadSnapshot(_ context.Context, keyHash string) (*snapshot.Snapshot, error) {
	var hash [32]byte
	if !decodeKeyHash(&hash, keyHash) {
		return nil, fmt.Errorf("load snapshot: %w", ErrNotFound)
	}
	e, ok := f.keys[hash]
	if !ok {
		return nil, fmt.Errorf("load snapshot: %w", ErrNotFound)
	}
	s := *e.snap
	u := *s.User
	s.User = &u
	if s.Group != nil {
		g := *s.Group
		s.Group = &g
	}
	return &s, nil
}

// KeyHashes implements Source.
func (f *File) KeyHashes(_ context.Context, scope Scope, id int64) ([]string, error) {
	var match func(*snapshot.Snapshot) bool
	switch scope {
	case ScopeKey:
		match = snapshot.ForKey(id)
	case ScopeUser:
		match = snapshot.ForUser(id)
	case ScopeGroup:
		match = snapshot.ForGroup(id)
	case ScopeAll:
		match = func(*snapshot.Snapshot) bool { return true }
	default:
		return nil, fmt.Errorf("key hashes: %w: unknown scope %q", ErrInvalid, scope)
	}
	var out []string
	for hash, e := range f.keys {
		if match(e.snap) {
			out = append(out, hex.EncodeToString(hash[:]))
		}
	}
	sort.Strings(out)
	return out, nil
}

// UserRPM implements Source.
func (f *File) UserRPM(_ context.Context, userID int64) (*UserRPM, error) {
	u, ok := f.users[userID]
	if !ok {
		return nil, fmt.Errorf("user %d: %w", userID, ErrNotFound)
	}
	var ids []int64
	for _, e := range f.keys {
		if e.snap.UserID == userID && e.snap.Group != nil {
			ids = append(ids, e.snap.Group.ID)
		}
	}
	for k := range f.overrides {
		if k[0] == userID {
			ids = append(ids, k[1])
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := &UserRPM{UserID: userID, RPMLimit: u.RPMLimit, Concurrency: u.Concurrency, Groups: make([]UserGroup, 0, len(ids))}
	for _, id := range ids {
		g := f.groups[id]
		ug := UserGroup{GroupID: id, Name: g.Name, RPMLimit: g.RPMLimit}
		if v, ok := f.overrides[[2]int64{userID, id}]; ok {
			ug.Override = &v
		}
		out.Groups = append(out.Groups, ug)
	}
	return out, nil
}

// GroupOverrides implements Source.
func (f *File) GroupOverrides(_ context.Context, groupID int64) ([]Override, error) {
	if _, ok := f.groups[groupID]; !ok {
		return nil, fmt.Errorf("group %d: %w", groupID, ErrNotFound)
	}
	out := []Override{}
	for k, v := range f.overrides {
		if k[1] == groupID {
			out = append(out, Override{UserID: k[0], RPMOverride: &v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}
