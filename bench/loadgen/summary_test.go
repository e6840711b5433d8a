package main

import "testing"

func TestRoundRatiosAndMedian(t *testing.T) {
	ph := &phase{Rounds: 3, Segments: []segment{
		{Scenario: "plain", Round: 1, RPS: 100}, {Scenario: "admitted", Round: 1, RPS: 90},
		{Scenario: "admitted", Round: 2, RPS: 40}, {Scenario: "plain", Round: 2, RPS: 50},
		{Scenario: "plain", Round: 3, RPS: 200}, {Scenario: "admitted", Round: 3, RPS: 100},
	}}
	got := roundRatios(ph, "admitted", "plain")
	if len(got) != 3 || got[0] != 0.9 || got[1] != 0.8 || got[2] != 0.5 {
		t.Fatalf("roundRatios = %v, want [0.9 0.8 0.5]", got)
	}
	if m := median(got); m != 0.8 {
		t.Fatalf("median = %v, want 0.8", m)
	}
	if m := median([]float64{0.5, 0.9}); m != 0.7 {
		t.Fatalf("median of two = %v, want 0.7", m)
	}
	if m := median(roundRatios(ph, "plain", "plain")); m != 1 {
		t.Fatalf("the baseline's own median = %v, want 1", m)
	}
}

func TestCacheHits(t *testing.T) {
	m := counters{
		`caddy_rpm_cache_hits_total{layer="l1"}`:   97,
		`caddy_rpm_cache_misses_total{layer="l1"}`: 3,
	}
	if got, want := cacheHits(m, "l1"), "0.9700 (97 / 100)"; got != want {
		t.Fatalf("l1 = %q, want %q", got, want)
	}
	if got := cacheHits(m, "l2"); got != "-" {
		t.Fatalf("l2 without lookups = %q, want -", got)
	}
}
