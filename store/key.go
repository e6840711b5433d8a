package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
)

// APIKeyPrefix starts every API key that NewKey generates (the display
// prefix of a key is longer: see displayPrefix).
const APIKeyPrefix = "sk-rpm-"

const (
	keyRandomLen  = 40 // base62 characters after APIKeyPrefix (~238 bits)
	displayPrefix = len(APIKeyPrefix) + 6
	base62        = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// GeneratedKey is a new random API key. Raw is shown to its owner once and
// never stored; Hash is what the stores keep.
type GeneratedKey struct {
	Raw    string
	Hash   [sha256.Size]byte
	Prefix string // the first characters of Raw, safe to display
}

// HashHex returns the key's SHA-256 as lowercase hex (the cache key).
func (k GeneratedKey) HashHex() string { return hex.EncodeToString(k.Hash[:]) }

// NewKey generates a random API key from crypto/rand: APIKeyPrefix followed by
// 40 base62 characters.
func NewKey() (GeneratedKey, error) {
	buf := make([]byte, len(APIKeyPrefix)+keyRandomLen)
	copy(buf, APIKeyPrefix)
	max := big.NewInt(int64(len(base62)))
	for i := len(APIKeyPrefix); i < len(buf); i++ {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return GeneratedKey{}, fmt.Errorf("generate key: %w", err)
		}
		buf[i] = base62[n.Int64()]
	}
	raw := string(buf)
	return GeneratedKey{Raw: raw, Hash: sha256.Sum256(buf), Prefix: raw[:displayPrefix]}, nil
}

// HashKey returns the lowercase hex SHA-256 of a raw key.
func HashKey(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return HexHash(&sum)
}

// HexHash returns a key's SHA-256 as lowercase hex (the cache key).
func HexHash(sum *[sha256.Size]byte) string {
	var buf [2 * sha256.Size]byte // on the stack: one allocation, the string
	hex.Encode(buf[:], sum[:])
	return string(buf[:])
}

// MaxKeyLen is the length in bytes of the longest API key a client can
// authenticate with.
const MaxKeyLen = 256

// CheckKeyShape reports why raw can never authenticate: it is longer than
// MaxKeyLen, or has a byte outside printable ASCII (a space included). The
// rpm handler refuses such keys without a lookup, and the keys file refuses
// to load them.
func CheckKeyShape(raw string) error {
	if len(raw) > MaxKeyLen {
		return fmt.Errorf("the API key is longer than %d bytes", MaxKeyLen)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < 0x21 || c > 0x7e {
			return errNotPrintable
		}
	}
	return nil
}

var errNotPrintable = errors.New("the API key contains characters that are not printable ASCII (spaces included)")
