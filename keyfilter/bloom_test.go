package keyfilter

import (
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

func randomHash() [32]byte {
	var h [32]byte
	_, _ = rand.Read(h[:])
	return h
}

// fpRate is the share of probes of random, never-added digests that b
// reports as maybe present.
func fpRate(b *Bloom, probes int) float64 {
	fp := 0
	for range probes {
		h := randomHash()
		if b.MayContain(&h) {
			fp++
		}
	}
	return float64(fp) / float64(probes)
}

func TestBloomNoFalseNegatives(t *testing.T) {
	b := NewBloom(50000)
	var added [][32]byte
	for i := range 100000 { // twice the capacity: still no false negative
		h := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		b.Add(&h)
		added = append(added, h)
	}
	for i := range added {
		if !b.MayContain(&added[i]) {
			t.Fatalf("digest %d added but reported absent", i)
		}
	}
}

// TestBloomFalsePositiveRate checks the documented rates: ≈ 0.02 % right
// after a build (half full) and ≈ 0.8 % at capacity.
func TestBloomFalsePositiveRate(t *testing.T) {
	const capacity = 100000
	b := NewBloom(capacity)
	if got := b.Bytes(); got < capacity*BitsPerKey/8 || got > capacity*BitsPerKey/8+8 {
		t.Fatalf("%d bytes for %d keys, want %d bits per key", got, capacity, BitsPerKey)
	}
	for range capacity / 2 {
		h := randomHash()
		b.Add(&h)
	}
	if r := fpRate(b, 200000); r > 0.001 {
		t.Fatalf("half full: false-positive rate %.4f%%, want about 0.02%%", 100*r)
	} else {
		t.Logf("half full: %.4f%%", 100*r)
	}
	for range capacity / 2 {
		h := randomHash()
		b.Add(&h)
	}
	if r := fpRate(b, 200000); r > 0.012 || r < 0.004 {
		t.Fatalf("full: false-positive rate %.3f%%, want about 0.8%%", 100*r)
	} else {
		t.Logf("full: %.3f%%", 100*r)
	}
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, MinCapacity}, {100, MinCapacity}, {MinCapacity / 2, MinCapacity}, {1000000, 2000000},
	} {
		if got := Capacity(tc.n); got != tc.want {
			t.Errorf("Capacity(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	if got := NewBloom(Capacity(1000000)).Bytes(); got != 2500000 {
		t.Errorf("a filter built for a million keys has %d bytes, want 2.5 MB", got)
	}
}

func BenchmarkBloomMayContain(b *testing.B) {
	bl := NewBloom(Capacity(1000000))
	for range 1000000 {
		h := randomHash()
		bl.Add(&h)
	}
	h := randomHash()
	for b.Loop() {
		h[0]++
		bl.MayContain(&h)
	}
}
