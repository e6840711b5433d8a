package main

import (
	"slices"
	"testing"
	"time"
)

func TestExactFlag(t *testing.T) {
	var f exactsFlag
	if err := f.Set("exact|127.0.0.1:1,127.0.0.1:2|/v1/models|sk-rpm-abc|20000|910000007"); err != nil {
		t.Fatalf("Set: %v", err)
	}
	e := f[0]
	if e.Name != "exact" || !slices.Equal(e.Addrs, []string{"127.0.0.1:1", "127.0.0.1:2"}) || e.Path != "/v1/models" ||
		e.Key != "sk-rpm-abc" || e.Limit != 20000 || e.User != 910000007 {
		t.Fatalf("parsed %+v", e)
	}
	for _, bad := range []string{
		"exact|127.0.0.1:1|/|k|10",                   // no user id
		"exact|127.0.0.1:1,10.0.0.1:2|/|k|10|1",      // not loopback
		"exact|127.0.0.1:1|v1|k|10|1",                // relative path
		"exact|127.0.0.1:1|/|@random|10|1",           // not one fixed key
		"exact|127.0.0.1:1|/|@range:sk-rpm-b:9|10|1", // a range
		"exact|127.0.0.1:1|/|k|0|1",                  // no limit
		"exact|127.0.0.1:1|/|k|10|-1",                // bad user id
	} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// Samples taken at the same time add up; the last 200 is the latest of
// theirs and the elapsed time the longest.
func TestMerge(t *testing.T) {
	t0 := time.Now()
	a := sample{Elapsed: 2 * time.Second, Requests: 3, Errors: 1, Statuses: map[int]int64{200: 2, 429: 1},
		Latencies: []int64{1, 2, 3}, LastOK: t0.Add(time.Second)}
	b := sample{Elapsed: 3 * time.Second, Requests: 2, Statuses: map[int]int64{429: 2},
		Latencies: []int64{4, 5}}
	m := merge([]sample{a, b})
	if m.Elapsed != 3*time.Second || m.Requests != 5 || m.Errors != 1 || m.Statuses[200] != 2 || m.Statuses[429] != 3 ||
		len(m.Latencies) != 5 || !m.LastOK.Equal(a.LastOK) {
		t.Fatalf("merge = %+v", m)
	}
}

func TestPidsFlagNames(t *testing.T) {
	var f pidsFlag
	for _, s := range []string{"caddy=1", "redis=2", "caddy=3", "loadgen=self"} {
		if err := f.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	if got, want := f.names(), []string{"caddy", "redis", "loadgen"}; !slices.Equal(got, want) {
		t.Fatalf("names = %v, want %v", got, want)
	}
}

func TestNotExact(t *testing.T) {
	result := func(admitted, refused, counter int64, oneWindow bool) *exactResult {
		// admitted over the limit are fail-open admissions here
		failOpen := max(admitted-10, 0)
		r := &exactResult{scenarioResult: *newScenarioResult("exact"), Limit: 10, Counter: counter, OneWindow: oneWindow, FailOpen: failOpen}
		r.Statuses[200], r.Statuses[429] = admitted, refused
		return r
	}
	for _, c := range []struct {
		r     *exactResult
		exact bool
	}{
		{result(10, 5, 10, true), true},
		{result(10, 5, 10, false), false}, // split by a window boundary
		{result(11, 5, 10, true), false},  // over-admitted, fail-open
		{result(9, 5, 10, true), false},   // refused early (units never handed back)
		{result(9, 0, 9, true), false},    // never reached the limit
		{result(10, 5, 12, true), false},  // units left counted in Redis
	} {
		why := c.r.notExact()
		if (why == "") != c.exact {
			t.Errorf("admitted %d, 429 %d, counter %d, one window %v: notExact = %q, want exact %v",
				c.r.admitted(), c.r.Statuses[429], c.r.Counter, c.r.OneWindow, why, c.exact)
		}
	}
}
