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

// TestIPListsMappedRanges: IPv4-mapped entries are unmapped like client
// addresses, ranges as well as single addresses, in both lists; a mapped
// range shorter than 96 bits is refused and the snapshot fails closed.
func TestIPListsMappedRanges(t *testing.T) {
	for _, list := range []string{"whitelist", "blacklist"} {
		for _, entry := range []string{"::ffff:127.0.0.0/104", "::FFFF:127.1.2.3/104", "::ffff:7f00:0/104", "127.0.0.0/8"} {
			s := &Snapshot{}
			if list == "whitelist" {
				s.IPWhitelist = []string{entry}
			} else {
				s.IPBlacklist = []string{entry}
			}
			if err := s.Prepare(); err != nil {
				t.Fatalf("%s %s: %v", list, entry, err)
			}
			for ip, in := range map[string]bool{
				"127.0.0.1":        true,
				"::ffff:127.9.9.9": true,
				"128.0.0.1":        false,
				"::1":              false,
			} {
				want := in == (list == "whitelist")
				if got := s.IPAllowed(netip.MustParseAddr(ip)); got != want {
					t.Errorf("%s %s: IPAllowed(%s) = %v, want %v", list, entry, ip, got, want)
				}
			}
		}
	}
	s := &Snapshot{IPWhitelist: []string{"::ffff:0:0/96"}}
	if err := s.Prepare(); err != nil || !s.IPAllowed(netip.MustParseAddr("203.0.113.9")) || s.IPAllowed(netip.MustParseAddr("2001:db8::1")) {
		t.Errorf("::ffff:0:0/96 is all of IPv4 and nothing else (err %v)", err)
	}
	for _, bad := range []string{"::ffff:127.0.0.0/95", "::ffff:127.0.0.0/80", "nope", ""} {
		s := &Snapshot{IPBlacklist: []string{"10.0.0.0/8", bad}}
		if err := s.Prepare(); err == nil {
			t.Errorf("blacklist entry %q accepted", bad)
		}
		if !s.HasIPRules() || s.IPAllowed(netip.MustParseAddr("127.0.0.1")) {
			t.Errorf("blacklist entry %q: the snapshot does not fail closed", bad)
		}
	}
}
