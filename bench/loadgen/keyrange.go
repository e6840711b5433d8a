package main

import (
	"bytes"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
)

// keyRangeTag starts a target key that names a range of keys:
// @range:<prefix>:<n> stands for the n keys <prefix> followed by 1 … n in
// decimal, zero-padded so that every key is as long as the keys `caddy rpm
// key create` prints (keyLen). bench/run.sh creates the same keys in SQL.
const keyRangeTag = "@range:"

// keyLen is the length of a generated key: "sk-rpm-" and 40 base62
// characters.
const keyLen = len(randomKeyPrefix) + randomKeyLen

type keyRange struct {
	prefix string
	n      int
}

// parseKeyRange parses @range:<prefix>:<n>; it returns nil and no error
// for a key that is no range.
func parseKeyRange(key string) (*keyRange, error) {
	rest, ok := strings.CutPrefix(key, keyRangeTag)
	if !ok {
		return nil, nil
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return nil, fmt.Errorf("key range %q: want %s<prefix>:<n>", key, keyRangeTag)
	}
	kr := &keyRange{prefix: rest[:i]}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 1 {
		return nil, fmt.Errorf("key range %q: n must be a positive integer", key)
	}
	kr.n = n
	if w := kr.width(); w < len(strconv.Itoa(n)) {
		return nil, fmt.Errorf("key range %q: the prefix leaves %d digits, too few for %d keys", key, max(w, 0), n)
	}
	return kr, nil
}

// width is the number of digits after the prefix.
func (kr *keyRange) width() int { return keyLen - len(kr.prefix) }

// key returns the i-th key (1-based), as a client sends it.
func (kr *keyRange) key(i int) string {
	return fmt.Sprintf("%s%0*d", kr.prefix, kr.width(), i)
}

// putIndex writes i zero-padded into dst.
func putIndex(dst []byte, i int) {
	for j := len(dst) - 1; j >= 0; j-- {
		dst[j] = byte('0' + i%10)
		i /= 10
	}
}

// uniform returns a connection's requests with a key of the range drawn
// uniformly at random for each.
func (kr *keyRange) uniform(req []byte, keyAt, keyLen int) nextRequest {
	req = bytes.Clone(req)
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	rng := rand.New(rand.NewChaCha8(seed))
	return func() []byte {
		putIndex(req[keyAt:keyAt+keyLen], 1+rng.IntN(kr.n))
		return req
	}
}

// each returns a connection's requests with the keys of the range that
// next (shared by the connections) hands out, each key once.
func (kr *keyRange) each(req []byte, keyAt, keyLen int, next *atomic.Int64) nextRequest {
	req = bytes.Clone(req)
	return func() []byte {
		i := next.Add(1)
		if i > int64(kr.n) {
			return nil
		}
		putIndex(req[keyAt:keyAt+keyLen], int(i))
		return req
	}
}
