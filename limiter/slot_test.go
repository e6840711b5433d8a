package limiter

import "testing"

func TestClusterSlot(t *testing.T) {
	// Reference values from the Redis Cluster specification and CLUSTER KEYSLOT.
	cases := map[string]uint16{
		"123456789":            12739, // CRC16 check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": clusterSlot("user1000"),
		"foo{}{bar}":           clusterSlot("foo{}{bar}"),
		"foo{{bar}}zap":        clusterSlot("{bar"),
	}
	for key, want := range cases {
		if got := clusterSlot(key); got != want {
			t.Errorf("clusterSlot(%q) = %d, want %d", key, got, want)
		}
	}
}
