package limiter

import "testing"

func TestClusterSlot(t *testing.T) {
	// Reference values as CLUSTER KEYSLOT answers them: the CRC16 check
	// value, then the hash-tag rules (the first non-empty {...} is hashed
	// alone; an empty {} means the whole key is hashed).
	cases := map[string]uint16{
		"123456789":            12739, // CRC16 check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": 3443, // the slot of "user1000"
		"foo{}{bar}":           8363, // the whole key
		"foo{{bar}}zap":        4015, // the slot of "{bar"
	}
	for key, want := range cases {
		if got := clusterSlot(key); got != want {
			t.Errorf("clusterSlot(%q) = %d, want %d", key, got, want)
		}
	}
}
