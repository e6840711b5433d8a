// Package keyfilter keeps, in process, a membership filter of every valid
// API key's SHA-256, so that a request with an unknown key is refused
// without asking the caches or the store.
//
// The filter is a Bloom filter: it never answers "absent" for a key it was
// given (no false negatives) and answers "maybe present" for an unknown key
// with a small probability (a false positive), in which case the request
// takes the usual path (L1, L2, store) and is refused there.
package keyfilter

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"sync/atomic"
)

// Sizing. With k hash functions and b bits per key, the false-positive rate
// once n keys are in is about (1 - e^(-k·n/m))^k for m bits. A filter is
// built for Capacity(n) = 2n keys (at least MinCapacity) at BitsPerKey bits
// each, so right after a build it holds 20 bits per key — a false-positive
// rate of about 0.02 % — and it reaches ≈ 0.8 % (BitsPerKey 10, Hashes 7)
// only when the number of keys has doubled, at which point the Filter
// rebuilds it larger. Memory: 2.5 bytes per key right after a build, i.e.
// ≈ 2.4 MiB per million keys.
const (
	// BitsPerKey is the number of filter bits per key of capacity.
	BitsPerKey = 10
	// Hashes is the number of bits set and tested per key (k); 7 is the
	// optimum for 10 bits per key (k = b·ln 2).
	Hashes = 7
	// MinCapacity is the smallest capacity a filter is built for (20 KiB),
	// so that a small deployment's first keys do not each force a rebuild.
	MinCapacity = 16384
)

// Capacity is the number of keys a filter built for n keys is sized for:
// twice n, for growth between rebuilds.
func Capacity(n int) int {
	return max(2*n, MinCapacity)
}

// Bloom is a fixed-size Bloom filter of SHA-256 digests. Add and MayContain
// may be called concurrently.
type Bloom struct {
	words    []atomic.Uint64
	m        uint64 // number of bits
	capacity int
	// seed mixes a per-filter random value into the bit positions, so a
	// key found to be a false positive stops being one at the next build.
	seed1, seed2 uint64
}

// NewBloom returns an empty filter for capacity keys at BitsPerKey bits
// each (at least one 64-bit word).
func NewBloom(capacity int) *Bloom {
	capacity = max(capacity, 1)
	nbits := uint64(capacity) * BitsPerKey
	nwords := (nbits + 63) / 64
	if nwords > math.MaxInt32 { // 16 GiB; keeps index arithmetic simple
		nwords = math.MaxInt32
	}
	return &Bloom{
		words:    make([]atomic.Uint64, nwords),
		m:        nwords * 64,
		capacity: capacity,
		seed1:    rand.Uint64(),
		seed2:    rand.Uint64(),
	}
}

// Capacity returns the number of keys the filter was sized for.
func (b *Bloom) Capacity() int { return b.capacity }

// Bytes returns the size of the bit array.
func (b *Bloom) Bytes() int { return len(b.words) * 8 }

// base returns the two base hashes of double hashing. The input is already
// a uniform hash, so two 64-bit slices of it serve, mixed with the seed; the
// second is odd so that no two of a key's Hashes values h1 + i·h2 coincide.
func (b *Bloom) base(h *[32]byte) (h1, h2 uint64) {
	h1 = binary.LittleEndian.Uint64(h[0:8]) ^ b.seed1
	h2 = (binary.LittleEndian.Uint64(h[8:16]) ^ b.seed2) | 1
	return h1, h2
}

// position is the i-th bit position, h1 + i·h2 scaled onto [0, m) by a
// multiply-shift (no division).
func (b *Bloom) position(h1, h2, i uint64) (word, mask uint64) {
	pos, _ := bits.Mul64(h1+i*h2, b.m)
	return pos >> 6, 1 << (pos & 63)
}

// Add puts the digest into the filter.
func (b *Bloom) Add(h *[32]byte) {
	h1, h2 := b.base(h)
	for i := range uint64(Hashes) {
		w, mask := b.position(h1, h2, i)
		if b.words[w].Load()&mask == 0 {
			b.words[w].Or(mask)
		}
	}
}

// MayContain reports false only if the digest was never added.
func (b *Bloom) MayContain(h *[32]byte) bool {
	h1, h2 := b.base(h)
	for i := range uint64(Hashes) {
		w, mask := b.position(h1, h2, i)
		if b.words[w].Load()&mask == 0 {
			return false
		}
	}
	return true
}
