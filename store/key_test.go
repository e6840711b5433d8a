package store_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyrpm/caddy-rpm/store"
)

func sprint(v any) string { return fmt.Sprintf("%+v", v) }

func TestNewKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := store.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k.Raw, store.APIKeyPrefix) || len(k.Raw) != len(store.APIKeyPrefix)+40 {
			t.Fatalf("key %q has the wrong form", k.Raw)
		}
		for _, c := range k.Raw[len(store.APIKeyPrefix):] {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				t.Fatalf("key %q has a non-base62 character", k.Raw)
			}
		}
		if sum := sha256.Sum256([]byte(k.Raw)); sum != k.Hash {
			t.Fatal("Hash is not the SHA-256 of Raw")
		}
		if k.HashHex() != hex.EncodeToString(k.Hash[:]) || k.HashHex() != store.HashKey(k.Raw) {
			t.Fatal("HashHex and HashKey disagree")
		}
		if !strings.HasPrefix(k.Raw, k.Prefix) || len(k.Prefix) >= len(k.Raw)/2 {
			t.Fatalf("prefix %q of %q", k.Prefix, k.Raw)
		}
		if seen[k.Raw] {
			t.Fatal("duplicate key")
		}
		seen[k.Raw] = true
	}
}
