package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// admittedOf is the number of requests Caddy admitted in r (the rpm
// handler's decisions; 0 for the plain site, which has none).
func admittedOf(r *scenarioResult) float64 {
	return sumMetric(r.Metrics, "caddy_rpm_decisions_total", `result="admitted"`)
}

// perUnit formats v / n with the given precision, or "-" when n is 0.
func perUnit(v, n float64, prec int) string {
	if n <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v/n)
}

// pairedRatios returns, per segment of the scenario in ph, its req/s over
// the mean of the baseline's nearest segments before and after it (one of
// them at the ends): with roundOrder those are its neighbours, run seconds
// apart, so the machine's drift shifts all three alike.
func pairedRatios(ph *phase, name, baseline string) []float64 {
	return paired(ph, name, baseline, func(s segment) float64 { return s.RPS },
		func(v, base float64) float64 { return v / base })
}

// pairedCapacity returns, per segment of the scenario in ph, the machine
// CPU per request of the baseline's segments around it (their mean, as
// pairedRatios) over its own: how many of the scenario's requests the
// machine serves for each baseline request with the same CPU. Busy CPU
// per request does not count the time the machine idled, which moves req/s
// from one segment to the next; the machine's speed still moves it, hence
// the pairing. Segments without CPU figures give none.
func pairedCapacity(ph *phase, name, baseline string) []float64 {
	var out []float64
	for _, c := range paired(ph, name, baseline, func(s segment) float64 { return s.MachineCPUus },
		func(v, base float64) float64 { return base / v }) {
		if !math.IsInf(c, 0) && !math.IsNaN(c) {
			out = append(out, c)
		}
	}
	return out
}

// pairedP99Added returns, per segment of the scenario in ph, its p99 less
// the mean of those of the baseline's segments around it (as
// pairedRatios). The p99 of a closed loop grows as the machine slows, so
// a scenario's p99 over all its segments less the baseline's over all of
// theirs also counts the drift between them: one slow segment decides it.
func pairedP99Added(ph *phase, name, baseline string) []float64 {
	return paired(ph, name, baseline, func(s segment) float64 { return s.P99ms },
		func(v, base float64) float64 { return v - base })
}

// paired compares, per segment of the scenario in ph, its value with the
// mean of the values of the baseline's nearest segments before and after
// it; the baseline's own segments are compared with themselves.
func paired(ph *phase, name, baseline string, value func(segment) float64, compare func(v, base float64) float64) []float64 {
	var out []float64
	for i, s := range ph.Segments {
		if s.Scenario != name {
			continue
		}
		var sum, n float64
		for j := i - 1; j >= 0; j-- {
			if ph.Segments[j].Scenario == baseline {
				sum, n = sum+value(ph.Segments[j]), n+1
				break
			}
		}
		for j := i + 1; j < len(ph.Segments); j++ {
			if ph.Segments[j].Scenario == baseline {
				sum, n = sum+value(ph.Segments[j]), n+1
				break
			}
		}
		if name == baseline {
			sum, n = value(s), 1
		}
		if sum > 0 {
			out = append(out, compare(value(s), sum/n))
		}
	}
	return out
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cacheHits formats the hits and misses of one cache layer, with the hit
// ratio.
func cacheHits(m counters, layer string) string {
	l := `layer="` + layer + `"`
	hits, misses := sumMetric(m, "caddy_rpm_cache_hits_total", l), sumMetric(m, "caddy_rpm_cache_misses_total", l)
	if hits+misses == 0 {
		return "-"
	}
	return fmt.Sprintf("%.4f (%.0f / %.0f)", hits/(hits+misses), hits, hits+misses)
}

// summaryMarkdown is the table issue 14 asks for: per scenario, req/s ×
// plain, Caddy CPU per request, Redis commands and Redis CPU per admitted
// request, L1/L2 hits and the p99 added, from the saturated phase (and the
// p99 added of the unsaturated one).
func summaryMarkdown(p func(string, ...any), cfg config, rep *report) {
	sat := rep.Phases[0]
	base := sat.scenario(cfg.baseline)
	if base == nil || base.RPS == 0 {
		return
	}
	var lat *phase
	if len(rep.Phases) > 1 {
		lat = rep.Phases[1]
	}
	p("\n#### Summary (phase %s, %d connections)\n\n", sat.Name, sat.Connections)
	p("× plain, paired: the median over the scenario's segments of its req/s over the mean of the plain segments run just before and after it; " +
		"capacity × plain, paired: the same median of those plain segments' machine CPU per request (busy time of all processes, from /proc/stat) over the scenario's, which the machine's idle time does not move; " +
		"p99 added: the scenario's p99 over all its segments less plain's over all of theirs, and in brackets the median over its segments of its p99 less the mean of those plain segments' (paired). " +
		"Caddy CPU is that of all Caddy processes (one works, the others idle). Redis commands are the client-issued ones " +
		"(not the script-internal ones); L1/L2: hit ratio (hits / lookups) from caddy_rpm_cache_hits_total and caddy_rpm_cache_misses_total.\n\n")
	p("| scenario | req/s | × plain | × plain, paired (median) | capacity × plain, paired (median) | p99 added ms, %d conn. (paired, median) |", sat.Connections)
	if lat != nil {
		p(" p99 added ms, %d conn. (paired, median) |", lat.Connections)
	}
	p(" Caddy CPU µs / request | admitted | Redis cmds / admitted | Redis CPU µs / admitted | L1 | L2 |\n|---|%s\n",
		strings.Repeat("---:|", 11+btoi(lat != nil)))
	for _, r := range sat.Scenarios {
		capacity := "-"
		if cs := pairedCapacity(sat, r.Name, cfg.baseline); len(cs) > 0 {
			capacity = fmt.Sprintf("%.3f", median(cs))
		}
		p("| %s | %.0f | %.3f | %.3f | %s | %+.3f (%+.3f) |", r.Name, r.RPS, r.RPS/base.RPS,
			median(pairedRatios(sat, r.Name, cfg.baseline)), capacity, r.P99ms-base.P99ms, median(pairedP99Added(sat, r.Name, cfg.baseline)))
		if lat != nil {
			if lr, lb := lat.scenario(r.Name), lat.scenario(cfg.baseline); lr != nil && lb != nil {
				p(" %+.3f (%+.3f) |", lr.P99ms-lb.P99ms, median(pairedP99Added(lat, r.Name, cfg.baseline)))
			} else {
				p(" - |")
			}
		}
		adm := admittedOf(r)
		p(" %s | %.0f | %s | %s | %s | %s |\n", perUnit(r.CPU["cpu:caddy"]*1e6, float64(r.Requests), 1), adm,
			perUnit(clientCommands(r.Redis), adm, 4), perUnit(r.CPU["cpu:redis"]*1e6, adm, 1),
			cacheHits(r.Metrics, "l1"), cacheHits(r.Metrics, "l2"))
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// exactMarkdown reports the exact runs: one user driven to its limit
// through several Caddy processes at once.
func exactMarkdown(p func(string, ...any), cfg config, rep *report) {
	if len(rep.Exact) == 0 {
		return
	}
	var base *scenarioResult
	if len(rep.Phases) > 0 {
		base = rep.Phases[0].scenario(cfg.baseline)
	}
	p("\n#### One user driven to its limit from %d Caddy processes at once\n\n", len(cfg.exacts[0].Addrs))
	p("Each run: a user of its own with a limit of L requests per minute, %d connections split between the processes, "+
		"%v in one rate-limit window (started with room left in it), then %v for unused reserved units to come back before its "+
		"counter is read from Redis. Exact: the 200s summed over the processes = L = the counter, in one window, "+
		"with no other status and no transport error; fail-open: 200s admitted without a check because Redis did not answer within redis_timeout. Admitted req/s = L / time to the last 200; × plain against the saturated phase's plain; "+
		"p99 over all responses (200 and 429).\n\n", cfg.connections, cfg.exactDuration, handBackSettle)
	p("| run | L | admitted (per process) | fail-open | 429 | other, errors | Redis counter | one window | exact | s to last 200 | admitted req/s (× plain) | all req/s (× plain) | p99 ms (added) | Caddy CPU µs / request | Redis cmds / admitted (EVALSHA) | Redis CPU µs / admitted |\n")
	p("|---|---:|---|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Exact {
		by := make([]string, len(r.AdmittedBy))
		for i, n := range r.AdmittedBy {
			by[i] = fmt.Sprint(n)
		}
		ratio := func(rps float64) string {
			if base == nil || base.RPS == 0 {
				return "-"
			}
			return fmt.Sprintf("%.3f", rps/base.RPS)
		}
		admRPS, added := 0.0, "-"
		if r.ToLastAdmitted > 0 {
			admRPS = float64(r.admitted()) / r.ToLastAdmitted
		}
		if base != nil {
			added = fmt.Sprintf("%+.3f", r.P99ms-base.P99ms)
		}
		adm := float64(r.admitted())
		p("| %s | %d | %d (%s) | %d | %d | %d, %d | %d | %s | **%s** | %.2f | %.0f (%s) | %.0f (%s) | %.3f (%s) | %s | %s (%s) | %s |\n",
			r.Name, r.Limit, r.admitted(), strings.Join(by, " + "), r.FailOpen, r.Statuses[429], r.Unexpected, r.Errors, r.Counter,
			yesNo(r.OneWindow), yesNo(r.Exact), r.ToLastAdmitted, admRPS, ratio(admRPS), r.RPS, ratio(r.RPS), r.P99ms, added,
			perUnit(r.CPU["cpu:caddy"]*1e6, float64(r.Requests), 1),
			perUnit(clientCommands(r.Redis), adm, 4), perUnit(r.Redis["evalsha"]+r.Redis["eval"], adm, 4),
			perUnit(r.CPU["cpu:redis"]*1e6, adm, 1))
	}
	p("\n")
	for _, r := range rep.Exact {
		if r.Exact {
			p("- %s: exact: yes\n", r.Name)
		} else {
			p("- %s: exact: no (%s)\n", r.Name, r.Why)
		}
	}
}
