package snapshot

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	override := int64(0)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := activeSnapshot(9)
	s.User.UserGroupRPMOverride = &override
	s.ExpiresAt = &exp
	s.IPWhitelist = []string{"10.0.0.0/8", "192.0.2.7"}
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"version":7`, `"user_group_rpm_override":0`, `"rpm_limit":10`, `"ip_whitelist"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("encoded snapshot lacks %s: %s", field, b)
		}
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.User.UserGroupRPMOverride == nil || *got.User.UserGroupRPMOverride != 0 {
		t.Fatal("an override of 0 must survive (it exempts the user), not become absent")
	}
	if !got.IPAllowed(netip.MustParseAddr("10.1.2.3")) || got.IPAllowed(netip.MustParseAddr("192.0.2.8")) {
		t.Fatal("whitelist not applied after decode")
	}
	if !got.Expired(exp) || got.Expired(exp.Add(-time.Second)) {
		t.Fatal("expiry boundary wrong")
	}
}

func TestDecodeRejectsOtherVersions(t *testing.T) {
	for _, in := range []string{`{"version":6}`, `{}`, `{"version":8}`, `[]`, ``} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q) succeeded", in)
		}
	}
	if _, err := Decode([]byte(`{"version":6}`)); !errors.Is(err, ErrVersion) {
		t.Errorf("version 6: %v, want ErrVersion", err)
	}
}

func TestIPLists(t *testing.T) {
	s := &Snapshot{IPBlacklist: []string{"2001:db8::/32", "198.51.100.1"}}
	if err := s.Prepare(); err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"198.51.100.1":        false,
		"::ffff:198.51.100.1": false, // IPv4-mapped form of a blacklisted address
		"2001:db8::1":         false,
		"198.51.100.2":        true,
		"2001:db9::1":         true,
	} {
		if got := s.IPAllowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("IPAllowed(%s) = %v, want %v", ip, got, want)
		}
	}
	bad := &Snapshot{IPWhitelist: []string{"not-an-ip"}}
	if err := bad.Prepare(); err == nil {
		t.Error("a malformed IP list entry was accepted")
	}
}
