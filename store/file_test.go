package store_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

const keysFile = `{
  "users": [
    {"id": 1, "username": "demo", "status": "active", "rpm_limit": 60, "role": "admin", "concurrency": 2, "balance": 1.5},
    {"id": 2, "rpm_limit": 5}
  ],
  "groups": [
    {"id": 1, "name": "default", "status": "active", "rpm_limit": 30, "platform": "openai"},
    {"id": 2, "name": "other", "status": "disabled", "rpm_limit": 0}
  ],
  "api_keys": [
    {"id": 1, "key": "sk-demo-1", "user_id": 1, "group_id": 1, "status": "active",
     "ip_whitelist": ["10.0.0.0/8"], "ip_blacklist": ["10.0.0.1"], "quota": 10, "quota_used": 2,
     "expires_at": "2030-01-02T03:04:05Z"},
    {"id": 2, "key_sha256": "HASH", "user_id": 2, "group_id": 1},
    {"id": 3, "key": "sk-demo-3", "user_id": 1, "status": "disabled"}
  ],
  "rpm_overrides": [
    {"user_id": 1, "group_id": 1, "rpm_override": 10},
    {"user_id": 1, "group_id": 2, "rpm_override": 0}
  ]
}`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	h2 := store.HashKey("sk-demo-2")
	f, err := store.LoadFile(writeFile(t, strings.Replace(keysFile, "HASH", strings.ToUpper(h2), 1)))
	if err != nil {
		t.Fatal(err)
	}

	s, err := f.LoadSnapshot(ctx, store.HashKey("sk-demo-1"))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	assertSnapshot(t, s, &snapshot.Snapshot{
		Version: snapshot.Version, APIKeyID: 1, UserID: 1, GroupID: testutil.Ptr(int64(1)), Status: "active",
		IPWhitelist: []string{"10.0.0.0/8"}, IPBlacklist: []string{"10.0.0.1"},
		Quota: 10, QuotaUsed: 2, ExpiresAt: &exp,
		User: &snapshot.User{ID: 1, Status: "active", Role: "admin", RPMLimit: 60, Concurrency: 2, Balance: 1.5,
			UserGroupRPMOverride: testutil.Ptr(int64(10))},
		Group: &snapshot.Group{ID: 1, Name: "default", Platform: "openai", Status: "active", RPMLimit: 30},
	})
	// Snapshots are copies: changing one does not change the store.
	s.User.RPMLimit = 999
	if s2, _ := f.LoadSnapshot(ctx, store.HashKey("sk-demo-1")); s2.User.RPMLimit != 60 {
		t.Fatal("LoadSnapshot returned shared state")
	}

	s, err = f.LoadSnapshot(ctx, h2)
	if err != nil {
		t.Fatal(err)
	}
	assertSnapshot(t, s, &snapshot.Snapshot{
		Version: snapshot.Version, APIKeyID: 2, UserID: 2, GroupID: testutil.Ptr(int64(1)), Status: "active",
		User:  &snapshot.User{ID: 2, Status: "active", RPMLimit: 5},
		Group: &snapshot.Group{ID: 1, Name: "default", Platform: "openai", Status: "active", RPMLimit: 30},
	})
	s, err = f.LoadSnapshot(ctx, store.HashKey("sk-demo-3"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Group != nil || s.GroupID != nil || s.User.UserGroupRPMOverride != nil || s.Status != "disabled" {
		t.Fatalf("key without group: %+v", s)
	}
	for _, h := range []string{store.HashKey("sk-nope"), "nothex", ""} {
		if _, err := f.LoadSnapshot(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LoadSnapshot(%q) = %v, want ErrNotFound", h, err)
		}
	}

	rpm, err := f.UserRPM(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := &store.UserRPM{UserID: 1, RPMLimit: 60, Groups: []store.UserGroup{
		{GroupID: 1, Name: "default", RPMLimit: 30, Override: testutil.Ptr(int64(10))},
		{GroupID: 2, Name: "other", RPMLimit: 0, Override: testutil.Ptr(int64(0))},
	}}
	if !reflect.DeepEqual(rpm, want) {
		t.Fatalf("UserRPM = %+v", rpm)
	}
	if _, err := f.UserRPM(ctx, 9); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UserRPM(unknown) = %v", err)
	}
	ov, err := f.GroupOverrides(ctx, 1)
	if err != nil || !reflect.DeepEqual(ov, []store.Override{{UserID: 1, RPMOverride: testutil.Ptr(int64(10))}}) {
		t.Fatalf("GroupOverrides = %v, %v", fmtOverrides(ov), err)
	}
	if _, err := f.GroupOverrides(ctx, 9); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GroupOverrides(unknown) = %v", err)
	}

	hashes, err := f.KeyHashes(ctx, store.ScopeGroup, 1)
	if err != nil || !sameSet(hashes, []string{store.HashKey("sk-demo-1"), h2}) {
		t.Fatalf("KeyHashes(group 1) = %v, %v", hashes, err)
	}
	hashes, _ = f.KeyHashes(ctx, store.ScopeUser, 1)
	if !sameSet(hashes, []string{store.HashKey("sk-demo-1"), store.HashKey("sk-demo-3")}) {
		t.Fatalf("KeyHashes(user 1) = %v", hashes)
	}
	hashes, _ = f.KeyHashes(ctx, store.ScopeKey, 2)
	if !sameSet(hashes, []string{h2}) {
		t.Fatalf("KeyHashes(key 2) = %v", hashes)
	}
	if hashes, _ = f.KeyHashes(ctx, store.ScopeAll, 0); len(hashes) != 3 {
		t.Fatalf("KeyHashes(all) = %v", hashes)
	}

	// Read-only by type: nothing of the file store can be written.
	if _, ok := any(f).(store.Writable); ok {
		t.Fatal("the file store implements store.Writable")
	}
}

func TestFileStoreKeepsNoRawKey(t *testing.T) {
	f, err := store.ParseFile([]byte(`{"users":[{"id":1}],"api_keys":[{"id":1,"key":"sk-secret-value","user_id":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmtAny(f), "sk-secret-value") {
		t.Fatal("the file store keeps the raw key")
	}
}

func fmtAny(v any) string { return strings.ReplaceAll(strings.TrimSpace(sprint(v)), "\n", " ") }

func TestFileStoreErrors(t *testing.T) {
	h := store.HashKey("x")
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"syntax", `{"users": [}`, "parse"},
		{"unknown field", `{"users": [{"id": 1, "rpm_limt": 3}]}`, "rpm_limt"},
		{"trailing data", `{} {}`, "after the JSON document"},
		{"user id", `{"users": [{"id": 0}]}`, "users[0]: id must be"},
		{"duplicate user", `{"users": [{"id": 1}, {"id": 1}]}`, "users[1]: duplicate id 1"},
		{"user status", `{"users": [{"id": 1, "status": "banned"}]}`, "users[0]: status"},
		{"user limit", `{"users": [{"id": 1, "rpm_limit": -1}]}`, "users[0]: rpm_limit"},
		{"duplicate group", `{"groups": [{"id": 1}, {"id": 1}]}`, "groups[1]: duplicate id 1"},
		{"duplicate group name", `{"groups": [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]}`, "groups[1]: name"},
		{"group limit", `{"groups": [{"id": 1, "rpm_limit": -3}]}`, "groups[0]: rpm_limit"},
		{"key unknown user", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1}, {"id": 2, "key": "b", "user_id": 7}]}`, "api_keys[1]: unknown user_id 7"},
		{"key unknown group", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1, "group_id": 4}]}`, "api_keys[0]: unknown group_id 4"},
		{"duplicate key id", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1}, {"id": 1, "key": "b", "user_id": 1}]}`, "api_keys[1]: duplicate id 1"},
		{"duplicate key", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "x", "user_id": 1}, {"id": 2, "key_sha256": "` + h + `", "user_id": 1}]}`, "api_keys[1]: duplicate key"},
		{"both key forms", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "x", "key_sha256": "` + h + `", "user_id": 1}]}`, "api_keys[0]: give either"},
		{"no key", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "user_id": 1}]}`, "api_keys[0]: key or key_sha256 is required"},
		{"bad hex", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key_sha256": "abc", "user_id": 1}]}`, "api_keys[0]: key_sha256"},
		{"bad ip", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1, "ip_whitelist": ["nope"]}]}`, "api_keys[0]: api key 1: ip_whitelist"},
		{"short mapped range", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1}, {"id": 2, "key": "b", "user_id": 1, "ip_blacklist": ["::ffff:127.0.0.0/90"]}]}`, "api_keys[1]: api key 2: ip_blacklist"},
		{"key with space", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1}, {"id": 2, "key": "b", "user_id": 1}, {"id": 3, "key": "sk-secret part", "user_id": 1}]}`, "api_keys[2]: key: the API key contains characters that are not printable ASCII"},
		{"key with tab", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "sk-secret\tx", "user_id": 1}]}`, "api_keys[0]: key: the API key contains"},
		{"key not ASCII", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "sk-secret-clé", "user_id": 1}]}`, "api_keys[0]: key: the API key contains"},
		{"key too long", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "sk-secret` + strings.Repeat("x", store.MaxKeyLen) + `", "user_id": 1}]}`, "api_keys[0]: key: the API key is longer than 256 bytes"},
		{"key_sha256 not hex", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key_sha256": "` + strings.Repeat("g", 64) + `", "user_id": 1}]}`, "api_keys[0]: key_sha256 must be 64 hex characters"},
		{"key_sha256 too long", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key_sha256": "` + h + `0", "user_id": 1}]}`, "api_keys[0]: key_sha256 must be 64 hex characters"},
		{"bad expiry", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1, "expires_at": "tomorrow"}]}`, "parse"},
		{"key status", `{"users": [{"id": 1}], "api_keys": [{"id": 1, "key": "a", "user_id": 1, "status": "x"}]}`, "api_keys[0]: status"},
		{"override unknown user", `{"groups": [{"id": 1}], "rpm_overrides": [{"user_id": 3, "group_id": 1, "rpm_override": 1}]}`, "rpm_overrides[0]: unknown user_id 3"},
		{"override unknown group", `{"users": [{"id": 1}], "rpm_overrides": [{"user_id": 1, "group_id": 3, "rpm_override": 1}]}`, "rpm_overrides[0]: unknown group_id 3"},
		{"override negative", `{"users": [{"id": 1}], "groups": [{"id": 1}], "rpm_overrides": [{"user_id": 1, "group_id": 1, "rpm_override": -1}]}`, "rpm_overrides[0]: rpm_override"},
		{"override missing", `{"users": [{"id": 1}], "groups": [{"id": 1}], "rpm_overrides": [{"user_id": 1, "group_id": 1}]}`, "rpm_overrides[0]: rpm_override"},
		{"override duplicate", `{"users": [{"id": 1}], "groups": [{"id": 1}], "rpm_overrides": [{"user_id": 1, "group_id": 1, "rpm_override": 1}, {"user_id": 1, "group_id": 1, "rpm_override": 2}]}`, "rpm_overrides[1]: duplicate"},
	} {
		_, err := store.LoadFile(writeFile(t, tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "sk-secret") {
			t.Errorf("%s: the error shows the raw key: %v", tc.name, err)
		}
	}
	if _, err := store.LoadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestFileStoreKeyShapes: the longest key a client can send loads, and the
// keys file's IP lists unmap IPv4-mapped ranges.
func TestFileStoreKeyShapes(t *testing.T) {
	longest := strings.Repeat("k", store.MaxKeyLen)
	f, err := store.ParseFile([]byte(`{"users":[{"id":1}],"api_keys":[{"id":1,"key":"` + longest + `","user_id":1,"ip_whitelist":["::ffff:127.0.0.0/104"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.LoadSnapshot(context.Background(), store.HashKey(longest))
	if err != nil {
		t.Fatal(err)
	}
	if !s.IPAllowed(netip.MustParseAddr("127.0.0.1")) || s.IPAllowed(netip.MustParseAddr("10.0.0.1")) {
		t.Error("::ffff:127.0.0.0/104 does not act as 127.0.0.0/8")
	}
}
