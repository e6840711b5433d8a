package gateway

import "testing"

func TestCredential(t *testing.T) {
	for _, tc := range []struct {
		value, scheme, cred string
		ours                bool
	}{
		{"Bearer sk-1", "Bearer", "sk-1", true},
		{"bEaReR   sk-1  ", "Bearer", "sk-1", true},
		{"Bearer", "Bearer", "", true},
		{"Bearer ", "Bearer", "", true},
		{"Basic abc", "Bearer", "", false},
		{"Bearersk-1", "Bearer", "", false},
		{"  sk-2 ", "", "sk-2", true},
	} {
		cred, ours := Credential(tc.value, tc.scheme)
		if cred != tc.cred || ours != tc.ours {
			t.Errorf("Credential(%q, %q) = %q, %v; want %q, %v", tc.value, tc.scheme, cred, ours, tc.cred, tc.ours)
		}
	}
}
