package caddyrpm

import (
	"strings"
	"testing"
)

func TestRedisPrefix(t *testing.T) {
	if got := RedisPrefix("rpm:", "0123456789abcdef"); got != "rpm:0123456789abcdef:" {
		t.Fatalf("RedisPrefix = %q", got)
	}
}

// TestKeyPrefixValidated: a key_prefix outside the safe alphabet is a
// config error naming the option, from JSON as from the Caddyfile.
func TestKeyPrefixValidated(t *testing.T) {
	for _, ok := range []string{"", "rpm:", "tenant-1/prod.gw_2:"} {
		a := &App{KeysFile: "k.json", RedisKeyPrefix: ok}
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(); err != nil {
			t.Errorf("key_prefix %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"rpm*:", "a?", "[ab]:", `a\b`, "{tag}:", "a b", "é:", strings.Repeat("a", 65)} {
		a := &App{KeysFile: "k.json", RedisKeyPrefix: bad}
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		err := a.Validate()
		if err == nil || !strings.Contains(err.Error(), "key_prefix") {
			t.Errorf("key_prefix %q: error %v, want one naming key_prefix", bad, err)
		}
	}
}
