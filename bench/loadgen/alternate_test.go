package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The two sides of an alternation take turns: no request of one is in
// flight while the other's are, each side counts only its own slices'
// responses, and a status other than the side's expected one is counted
// as unexpected.
func TestAlternateTakesTurns(t *testing.T) {
	var inBase, inScenario, overlaps atomic.Int64
	serve := func(mine, other *atomic.Int64, status int) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mine.Add(1)
			if other.Load() > 0 {
				overlaps.Add(1)
			}
			time.Sleep(200 * time.Microsecond)
			mine.Add(-1)
			w.WriteHeader(status)
		}))
	}
	base := serve(&inBase, &inScenario, 200)
	defer base.Close()
	scenario := serve(&inScenario, &inBase, 429)
	defer scenario.Close()
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	a, err := alternate(target{Name: "plain", Addr: addr(base), Path: "/", Expect: 200},
		target{Name: "admitted", Addr: addr(scenario), Path: "/", Expect: 200},
		4, 5, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d requests found the other side's in flight", n)
	}
	if a.Scenario.Slices != 5 || a.Baseline.Slices != 6 || len(a.PairRatios) != 5 {
		t.Errorf("slices: scenario %d, baseline %d, pairs %d; want 5, 6, 5", a.Scenario.Slices, a.Baseline.Slices, len(a.PairRatios))
	}
	if a.Scenario.Requests == 0 || a.Scenario.Statuses[429] != a.Scenario.Requests || a.Scenario.Unexpected != a.Scenario.Requests {
		t.Errorf("scenario: %d requests, statuses %v, %d unexpected; want all 429 and unexpected", a.Scenario.Requests, a.Scenario.Statuses, a.Scenario.Unexpected)
	}
	if a.Baseline.Requests == 0 || a.Baseline.Statuses[200] != a.Baseline.Requests || a.Baseline.Unexpected != 0 {
		t.Errorf("baseline: %d requests, statuses %v, %d unexpected; want all 200", a.Baseline.Requests, a.Baseline.Statuses, a.Baseline.Unexpected)
	}
	if a.clean() {
		t.Error("an alternation with unexpected statuses is clean")
	}
	if a.Baseline.Seconds < 6*0.020 || a.Scenario.Seconds < 5*0.020 {
		t.Errorf("seconds: baseline %.3f, scenario %.3f; want at least 6 and 5 slices of 20 ms", a.Baseline.Seconds, a.Scenario.Seconds)
	}
}

func TestPairRatios(t *testing.T) {
	// baseline 100, scenario 90, baseline 80, scenario 35, baseline 60.
	got := pairRatios([]float64{100, 90, 80, 35, 60})
	if len(got) != 2 || got[0] != 1 || got[1] != 0.5 {
		t.Fatalf("pairRatios = %v, want [1 0.5]", got)
	}
}

func TestQuartiles(t *testing.T) {
	if q := quartiles([]float64{5, 1, 4, 2, 3}); q != [3]float64{2, 3, 4} {
		t.Fatalf("quartiles = %v, want [2 3 4]", q)
	}
	if q := quartiles(nil); q != [3]float64{} {
		t.Fatalf("quartiles(nil) = %v, want zeros", q)
	}
}
