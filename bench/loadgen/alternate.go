package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Alternation
//
// A segment of runPhase is compared with the baseline's segments seconds
// before and after it, yet this machine's speed moves within those
// seconds: the baseline's own 4-second segments of one round differ by up
// to 30 %. An alternation switches all connections between the baseline
// and one scenario every slice (-slice, 250 ms by default): baseline,
// scenario, baseline, …, baseline. At each switch it waits for every
// response, so the two never share Caddy's queues (driving both at once
// measures how the queues are divided, not what a request costs; see
// bench/HISTORY.md), and each sees the machine within a slice of the
// other. The ratio of their totals then holds the drift of seconds and
// minutes in both of its terms alike.

// alternation is the outcome of one scenario's alternation with the
// baseline.
type alternation struct {
	Name  string `json:"scenario"`
	Slice string `json:"slice"`
	// Scenario and Baseline are each side's sums over its slices; the
	// baseline has one slice more than the scenario.
	Scenario side `json:"scenario_side"`
	Baseline side `json:"baseline_side"`
	// PairRatios are, per slice of the scenario, its req/s over the mean
	// of those of the baseline's slices just before and after it.
	PairRatios []float64 `json:"pair_ratios"`
	// Redis and Metrics are what Redis's commandstats and the Caddy
	// processes' metrics changed by over the whole alternation (the
	// baseline sends no Redis command).
	Redis   counters `json:"redis_commands"`
	Metrics counters `json:"caddy_metrics"`
}

// side sums one target's slices of an alternation.
type side struct {
	Slices     int           `json:"slices"`
	Requests   int64         `json:"requests"`
	Seconds    float64       `json:"seconds"`
	Statuses   map[int]int64 `json:"statuses"`
	Unexpected int64         `json:"unexpected_status"`
	Errors     int64         `json:"errors"`
	CPU        counters      `json:"cpu_seconds"`
	P99ms      float64       `json:"p99_ms"`
	latencies  []int64
}

// add counts one slice: its sample, the CPU times it took, and as
// unexpected every status but expect.
func (s *side) add(smp sample, cpu counters, expect int) {
	s.Slices++
	s.Requests += smp.Requests
	s.Seconds += smp.Elapsed.Seconds()
	s.Errors += smp.Errors
	for st, c := range smp.Statuses {
		s.Statuses[st] += c
		if st != expect {
			s.Unexpected += c
		}
	}
	s.CPU.add(cpu)
	s.latencies = append(s.latencies, smp.Latencies...)
}

func (s *side) rps() float64 { return float64(s.Requests) / max(s.Seconds, 1e-9) }

// cpuPerRequest is the named CPU time (a key of cpuTimes) per request, in
// µs.
func (s *side) cpuPerRequest(key string) float64 {
	return s.CPU[key] / float64(max(s.Requests, 1)) * 1e6
}

// ratio is the scenario's req/s over the baseline's, each over all its
// slices.
func (a *alternation) ratio() float64 { return a.Scenario.rps() / a.Baseline.rps() }

// capacity is the baseline's machine CPU per request over the scenario's.
func (a *alternation) capacity() float64 {
	return a.Baseline.cpuPerRequest("cpu:machine-busy") / a.Scenario.cpuPerRequest("cpu:machine-busy")
}

// clean reports whether both sides saw only their expected status and no
// transport error.
func (a *alternation) clean() bool {
	return a.Scenario.Unexpected+a.Scenario.Errors+a.Baseline.Unexpected+a.Baseline.Errors == 0
}

// alternate runs t against base, n connections each, for count slices of
// t (and one more of base), each of length slice. One unmeasured slice of
// each first dials the connections.
func alternate(base, t target, n, count int, slice time.Duration, pids pidsFlag) (*alternation, error) {
	baseConns, conns := dialers(base.Addr, n), dialers(t.Addr, n)
	defer closeAll(baseConns)
	defer closeAll(conns)
	baseReqs, reqs := requests(base), requests(t)
	drive(baseConns, time.Now().Add(slice), baseReqs)
	drive(conns, time.Now().Add(slice), reqs)

	a := &alternation{Name: t.Name, Slice: slice.String(),
		Scenario: side{Statuses: map[int]int64{}, CPU: counters{}},
		Baseline: side{Statuses: map[int]int64{}, CPU: counters{}}}
	var rates []float64 // per slice, in run order
	for i := range 2*count + 1 {
		onBase := i%2 == 0
		cs, next, to, expect := conns, reqs, &a.Scenario, t.Expect
		if onBase {
			cs, next, to, expect = baseConns, baseReqs, &a.Baseline, base.Expect
		}
		before, err := cpuTimes(pids)
		if err != nil {
			return nil, err
		}
		s := drive(cs, time.Now().Add(slice), next)
		after, err := cpuTimes(pids)
		if err != nil {
			return nil, err
		}
		to.add(s, delta(before, after), expect)
		rates = append(rates, float64(s.Requests)/s.Elapsed.Seconds())
	}
	a.PairRatios = pairRatios(rates)
	for _, s := range []*side{&a.Scenario, &a.Baseline} {
		slices.Sort(s.latencies)
		s.P99ms = pct(s.latencies, 0.99)
		s.latencies = nil
	}
	return a, nil
}

// pairRatios takes the req/s of alternating slices, baseline first and
// last, and returns per scenario slice (the odd ones) its req/s over the
// mean of its two neighbours'.
func pairRatios(rates []float64) []float64 {
	var out []float64
	for i := 1; i+1 < len(rates); i += 2 {
		if b := (rates[i-1] + rates[i+1]) / 2; b > 0 {
			out = append(out, rates[i]/b)
		}
	}
	return out
}

// runAlternations alternates each scenario of cfg.alternate with the
// baseline, after the passes over key ranges that are due.
func runAlternations(ctx context.Context, cfg config, rdb *redis.Client, passes keyPasses) ([]*alternation, error) {
	base, ok := targetNamed(cfg, cfg.baseline)
	if !ok {
		return nil, fmt.Errorf("alternation: no baseline target %q", cfg.baseline)
	}
	n := int(cfg.alternateDuration / cfg.slice)
	var out []*alternation
	for _, name := range cfg.alternate {
		t, ok := targetNamed(cfg, name)
		if !ok {
			return nil, fmt.Errorf("alternation: no target %q", name)
		}
		passes.refresh(cfg.targets, cfg.connections, "alternation "+name)
		log.Printf("alternating %s with %s: %d slices of %v each", name, cfg.baseline, n, cfg.slice)
		var a *alternation
		var err error
		d, merr := measured(ctx, cfg, rdb, func() { a, err = alternate(base, t, cfg.connections, n, cfg.slice, cfg.pids) })
		if err = errors.Join(err, merr); err != nil {
			return nil, err
		}
		a.Redis, a.Metrics = d.redis, d.metrics
		log.Printf("  %.3f × %s (pairs: median %.3f), capacity %.3f, %.4f Redis commands per request", a.ratio(), cfg.baseline,
			median(a.PairRatios), a.capacity(), clientCommands(a.Redis)/float64(max(a.Scenario.Requests, 1)))
		out = append(out, a)
	}
	return out, nil
}

// alternationMarkdown reports the alternations.
func alternationMarkdown(p func(string, ...any), cfg config, rep *report) {
	if len(rep.Alternations) == 0 {
		return
	}
	a0 := rep.Alternations[0]
	p("\n#### Alternating with %s every %s (%d connections)\n\n", cfg.baseline, a0.Slice, cfg.connections)
	p("Each scenario in turn: all connections switch between %s and the scenario every %s (%s first and last), "+
		"waiting at each switch for every response, for %d slices of the scenario. "+
		"× %s: the scenario's req/s over %s's, each over all its slices; paired: the median over the scenario's slices of its req/s over the mean of the %s slices just before and after it; "+
		"capacity: %s's machine CPU per request over the scenario's (busy time of all processes, from /proc/stat); "+
		"p99 added: the scenario's p99 over all its slices less %s's; Redis commands: client-issued, per request of the scenario, over the whole alternation.\n\n",
		cfg.baseline, a0.Slice, cfg.baseline, a0.Scenario.Slices, cfg.baseline, cfg.baseline, cfg.baseline, cfg.baseline, cfg.baseline)
	p("| scenario | req/s | %s req/s | × %s | × %s, paired (median; quartiles) | capacity × %s | p99 added ms | Caddy CPU µs / request (%s) | Redis commands / request | L1 | statuses, errors |\n",
		cfg.baseline, cfg.baseline, cfg.baseline, cfg.baseline, cfg.baseline)
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, a := range rep.Alternations {
		q := quartiles(a.PairRatios)
		p("| %s | %.0f | %.0f | %.3f | %.3f (%.3f–%.3f) | %.3f | %+.3f | %.1f (%.1f) | %s | %s | %s, %d; %s: %s, %d |\n",
			a.Name, a.Scenario.rps(), a.Baseline.rps(), a.ratio(), q[1], q[0], q[2], a.capacity(),
			a.Scenario.P99ms-a.Baseline.P99ms,
			a.Scenario.cpuPerRequest("cpu:caddy"), a.Baseline.cpuPerRequest("cpu:caddy"),
			perReq(clientCommands(a.Redis), a.Scenario.Requests), cacheHits(a.Metrics, "l1"),
			statuses(a.Scenario.Statuses), a.Scenario.Errors, cfg.baseline, statuses(a.Baseline.Statuses), a.Baseline.Errors)
	}
}

// quartiles returns the lower quartile, the median and the upper quartile
// of xs (zeros for none).
func quartiles(xs []float64) [3]float64 {
	if len(xs) == 0 {
		return [3]float64{}
	}
	s := slices.Sorted(slices.Values(xs))
	at := func(q float64) float64 { return s[int(q*float64(len(s)-1)+0.5)] }
	return [3]float64{at(0.25), median(s), at(0.75)}
}

// alternationTargets says, per alternated scenario with a throughput
// target in issue 14, whether its ratio meets it: admitted ≥ 0.92, users
// ≥ 0.80, users-large ≥ 0.70.
func alternationTargets(cfg config, rep *report) []string {
	var out []string
	for _, a := range rep.Alternations {
		var want float64
		switch {
		case keyRangeOf(cfg, a.Name) != nil && strings.Contains(a.Name, "large"):
			want = 0.70
		case keyRangeOf(cfg, a.Name) != nil:
			want = 0.80
		case a.Name == "admitted":
			want = 0.92
		default:
			continue
		}
		out = append(out, fmt.Sprintf("%s alternating with %s every %s: %.3f × %s (paired median %.3f; target ≥ %.2f, with no unexpected status or error): %s",
			a.Name, cfg.baseline, a.Slice, a.ratio(), cfg.baseline, median(a.PairRatios), want,
			verdict(a.ratio() >= want && a.clean())))
	}
	return out
}
