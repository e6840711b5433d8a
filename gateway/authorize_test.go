package gateway

import (
	"net/netip"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/snapshot"
)

// TestAuthorizeOrder walks the authentication rules: each case breaks one
// rule and every rule after it, so the first broken rule must be the one
// reported.
func TestAuthorizeOrder(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	past := now.Add(-time.Second)
	client := netip.MustParseAddr("10.1.2.3")
	good := func() *snapshot.Snapshot {
		s := snap(nil, 10, 20, true)
		s.Status = "active"
		s.IPWhitelist = []string{"10.0.0.0/8"}
		if err := s.Prepare(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	breakFrom := func(rule int) *snapshot.Snapshot {
		s := good()
		steps := []func(){
			func() { s.NotFound = true },
			func() { s.Status = "disabled" },
			func() { s.ExpiresAt = &past },
			func() { s.Quota, s.QuotaUsed = 1, 1 },
			func() { s.IPWhitelist = []string{"192.168.0.0/16"}; _ = s.Prepare() },
			func() { s.User.Status = "disabled" },
			func() { s.Group.Status = "disabled" },
		}
		for _, step := range steps[rule:] {
			step()
		}
		return s
	}
	if got := Authorize(good(), now, client); got != NotRefused {
		t.Fatalf("a good key: %v", got)
	}
	for i, want := range []Refusal{UnknownKey, KeyDisabled, KeyExpired, QuotaExhausted, IPNotAllowed, UserDisabled, GroupDisabled} {
		if got := Authorize(breakFrom(i), now, client); got != want {
			t.Errorf("rules %d and after broken: %v, want %v", i, got, want)
		}
	}
	// No IP lists: the address is not looked at.
	s := good()
	s.IPWhitelist = nil
	if err := s.Prepare(); err != nil {
		t.Fatal(err)
	}
	if got := Authorize(s, now, netip.Addr{}); got != NotRefused {
		t.Errorf("a key without IP lists and no client address: %v", got)
	}
}
