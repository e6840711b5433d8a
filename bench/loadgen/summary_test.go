package main

import (
	"slices"
	"testing"
)

func TestPairedRatiosAndMedian(t *testing.T) {
	ph := &phase{Rounds: 2, Segments: []segment{
		{Scenario: "plain", Round: 1, RPS: 100}, {Scenario: "admitted", Round: 1, RPS: 90},
		{Scenario: "plain", Round: 1, RPS: 80}, {Scenario: "users", Round: 1, RPS: 40},
		{Scenario: "plain", Round: 1, RPS: 60},
		{Scenario: "plain", Round: 2, RPS: 50}, {Scenario: "users", Round: 2, RPS: 25},
		{Scenario: "plain", Round: 2, RPS: 50}, {Scenario: "admitted", Round: 2, RPS: 45},
	}}
	// admitted: 90 / mean(100, 80) and, at the end, 45 / 50 (one neighbour).
	got := pairedRatios(ph, "admitted", "plain")
	if len(got) != 2 || got[0] != 1 || got[1] != 0.9 {
		t.Fatalf("pairedRatios(admitted) = %v, want [1 0.9]", got)
	}
	got = pairedRatios(ph, "users", "plain")
	if len(got) != 2 || got[0] != 40.0/70 || got[1] != 0.5 {
		t.Fatalf("pairedRatios(users) = %v, want [%v 0.5]", got, 40.0/70)
	}
	if m := median([]float64{0.5, 0.8, 0.9}); m != 0.8 {
		t.Fatalf("median = %v, want 0.8", m)
	}
	if m := median([]float64{0.5, 0.9}); m != 0.7 {
		t.Fatalf("median of two = %v, want 0.7", m)
	}
	if m := median(pairedRatios(ph, "plain", "plain")); m != 1 {
		t.Fatalf("the baseline's own median = %v, want 1", m)
	}
}

// A slow round raises every p99 in it: paired, each segment is compared
// with the plain segments around it, so the slow round adds nothing.
func TestPairedP99Added(t *testing.T) {
	ph := &phase{Rounds: 2, Segments: []segment{
		{Scenario: "plain", Round: 1, P99ms: 10}, {Scenario: "admitted", Round: 1, P99ms: 10.5},
		{Scenario: "plain", Round: 1, P99ms: 10},
		{Scenario: "plain", Round: 2, P99ms: 14}, {Scenario: "admitted", Round: 2, P99ms: 15},
		{Scenario: "plain", Round: 2, P99ms: 16},
		{Scenario: "plain", Round: 3, P99ms: 10}, {Scenario: "admitted", Round: 3, P99ms: 9.5},
	}}
	got := pairedP99Added(ph, "admitted", "plain")
	if !slices.Equal(got, []float64{0.5, 0, -0.5}) {
		t.Fatalf("pairedP99Added(admitted) = %v, want [0.5 0 -0.5]", got)
	}
	if m := median(pairedP99Added(ph, "plain", "plain")); m != 0 {
		t.Fatalf("the baseline's own paired p99 added = %v, want 0", m)
	}
}

func TestRoundOrderPutsBaselineAroundEachScenario(t *testing.T) {
	targets := []target{{Name: "plain"}, {Name: "a"}, {Name: "b"}, {Name: "c"}}
	names := func(ts []target) (out []string) {
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	for round, want := range [][]string{
		{"plain", "a", "plain", "b", "plain", "c", "plain"},
		{"plain", "b", "plain", "c", "plain", "a", "plain"},
	} {
		if got := names(roundOrder(targets, "plain", round)); !slices.Equal(got, want) {
			t.Errorf("round %d: %v, want %v", round, got, want)
		}
	}
	if got := names(roundOrder(targets[1:], "plain", 1)); !slices.Equal(got, []string{"b", "c", "a"}) {
		t.Errorf("without the baseline: %v, want [b c a]", got)
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

// Capacity pairs machine CPU per request like pairedRatios pairs req/s,
// inverted: a scenario that needs more CPU per request than the plain
// segments around it serves fewer requests with the same CPU.
func TestPairedCapacity(t *testing.T) {
	ph := &phase{Rounds: 2, Segments: []segment{
		{Scenario: "plain", Round: 1, MachineCPUus: 200}, {Scenario: "users", Round: 1, MachineCPUus: 250},
		{Scenario: "plain", Round: 1, MachineCPUus: 300},
		{Scenario: "plain", Round: 2, MachineCPUus: 100}, {Scenario: "users", Round: 2, MachineCPUus: 0},
		{Scenario: "plain", Round: 2, MachineCPUus: 100},
	}}
	// users: mean(200, 300) / 250 = 1; round 2 has no CPU figure, so none.
	if got := pairedCapacity(ph, "users", "plain"); !slices.Equal(got, []float64{1}) {
		t.Fatalf("pairedCapacity(users) = %v, want [1]", got)
	}
	ph.Segments[4].MachineCPUus = 125
	if got := pairedCapacity(ph, "users", "plain"); !slices.Equal(got, []float64{1, 0.8}) {
		t.Fatalf("pairedCapacity(users) = %v, want [1 0.8]", got)
	}
	if got := pairedCapacity(ph, "plain", "plain"); !slices.Equal(got, []float64{1, 1, 1, 1}) {
		t.Fatalf("the baseline's own = %v, want all 1", got)
	}
}
