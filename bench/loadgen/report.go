package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// scriptInternal are the commands the limiter's Lua scripts call (the
// check, and with concurrency slots the acquire and renewal parts); Redis
// counts them in commandstats although the client never sends them.
// UNLINK is the first write of a counter bucket in a new window
// (limiter/layout.go); clients send it too (a flush of L2 entries), but in
// no scenario here.
var scriptInternal = []string{"time", "hmget", "hset", "hincrby", "pexpireat", "unlink",
	"zremrangebyscore", "zcard", "zadd", "pexpire", "pttl", "zcount"}

// own are the commands the benchmark itself sends to Redis.
var own = []string{"info"}

// clientCommands is the number of commands clients sent (everything but
// script-internal calls and the benchmark's own INFO).
func clientCommands(c counters) float64 {
	var n float64
	for k, v := range c {
		if !slices.Contains(scriptInternal, k) && !slices.Contains(own, k) {
			n += v
		}
	}
	return n
}

// otherClient lists client commands other than EVALSHA, as "get 3, ping 1".
func otherClient(c counters) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if k == "evalsha" || slices.Contains(scriptInternal, k) || slices.Contains(own, k) || c[k] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", strings.ToUpper(k), c[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func perReq(v float64, n int64) string { return perUnit(v, float64(n), 4) }

func markdown(cfg config, rep *report) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	p("### Run of %s\n\n", rep.Started.Format("2006-01-02 15:04:05 MST"))
	for _, n := range cfg.notes {
		p("- %s\n", n)
	}
	p("- load generator: keep-alive HTTP/1.1, closed loop, GOMAXPROCS=%d; %v warm-up; per phase, %d interleaved rounds (scenario order rotated each round); a round starts with one request per key of each key range not so passed over in the last %v\n",
		rep.GoMaxProcs, cfg.warmup, cfg.rounds, keyPassEvery)
	for _, ph := range rep.Phases {
		p("- phase %s: %d connections, %s per scenario per round; load average (1/5/15 min) before: %s, after: %s\n",
			ph.Name, ph.Connections, ph.Segment, ph.LoadBefore, ph.LoadAfter)
	}
	summaryMarkdown(p, cfg, rep)
	alternationMarkdown(p, cfg, rep)
	exactMarkdown(p, cfg, rep)
	for _, ph := range rep.Phases {
		phaseMarkdown(p, cfg, rep, ph)
	}

	var rpmReqs int64
	for _, ph := range rep.Phases {
		for _, r := range ph.Scenarios {
			if r.Name != cfg.baseline {
				rpmReqs += r.Requests
			}
		}
	}
	// Store loads: those of background reloads (keys in use whose L2
	// entry expired: each key about once per l2_ttl, no request waits for
	// them); on the request path, those of random keys that passed the key
	// filter (false positives), which no cache can spare, those of the
	// key-range scenarios (a key read less than once per half l1_ttl, as
	// most are when a scenario runs 4 s per round, expires from L1 and L2
	// and its next read loads it; the passes that start the rounds leave
	// none due, see keyPasses), and the others (target 0: the other
	// scenarios' keys stay cached).
	var loads, reloads, fpLoads, rangeLoads float64
	for _, ph := range rep.Phases {
		for _, r := range ph.Scenarios {
			n := sumMetric(r.Metrics, "caddy_rpm_store_loads_total")
			bg := sumMetric(r.Metrics, "caddy_rpm_store_reloads_total")
			loads += n
			reloads += bg
			switch {
			case keyOf(cfg, r.Name) == RandomKey:
				fpLoads += n - bg
			case keyRangeOf(cfg, r.Name) != nil:
				rangeLoads += n - bg
			}
		}
	}
	otherLoads := loads - reloads - fpLoads - rangeLoads
	if rep.PG != nil {
		p("\n**Postgres**: %.0f store loads (caddy_rpm_store_loads_total) and %.0f table scans, %.0f rows changed in the benchmark schema over %d rpm requests (%s scans per rpm request). Scan measure: %s.\n",
			loads, rep.PG["scans"], rep.PG["changes"], rpmReqs, perReq(rep.PG["scans"], rpmReqs), rep.PGNote)
	}

	sat := rep.Phases[0]
	base := sat.scenario(cfg.baseline)
	if base == nil {
		return b.String()
	}
	p("\n**Targets** (spec §11):\n\n")
	for _, r := range sat.Scenarios {
		if r.Name == cfg.baseline {
			continue
		}
		ev := r.Redis["evalsha"] + r.Redis["eval"]
		cl := clientCommands(r.Redis)
		if kr := keyRangeOf(cfg, r.Name); kr != nil {
			p("- %s\n", usersLine(cfg, kr, base, r))
			continue
		}
		switch {
		case r.Name == "capped" && sat.scenario("admitted") != nil:
			p("- %s\n", cappedLine(base, sat.scenario("admitted"), r))
		case strings.Contains(r.Name, "admit"):
			p("- %s throughput %.3f × plain (target ≥ 0.90): %s\n", r.Name, r.RPS/base.RPS, verdict(r.RPS/base.RPS >= 0.90))
			for _, ph := range rep.Phases {
				pb, pr := ph.scenario(cfg.baseline), ph.scenario(r.Name)
				added, addedPaired := pr.P99ms-pb.P99ms, median(pairedP99Added(ph, r.Name, cfg.baseline))
				p("- %s p99 added, %s (%d connections): %.3f ms over all segments, %.3f ms paired (median) (target ≤ 1 ms): %s, paired %s\n",
					r.Name, ph.Name, ph.Connections, added, addedPaired, verdict(added <= 1), verdict(addedPaired <= 1))
			}
			if len(cfg.pids) > 0 {
				p("- %s\n", cpuBudget(cfg, base, r))
			}
			// Concurrent checks share script calls: a request waits for at
			// most one round trip when no request sent more than one check
			// and every call was an EVALSHA Redis saw. Requests admitted
			// from a reservation send none; other Caddy processes' calls
			// (hand-backs of their reservations, lease renewals) can add
			// EVALSHAs to a segment.
			calls := sumMetric(r.Metrics, "caddy_rpm_redis_checks_per_call_count")
			checks := sumMetric(r.Metrics, "caddy_rpm_redis_checks_per_call_sum")
			p("- %s Redis round trips: %d requests sent %.0f checks in %.0f script calls (%.2f checks per call), %.0f requests sent none; Redis saw %.0f EVAL/EVALSHA and %.0f client-issued commands in all (target: each request waits for at most 1 round trip): %s\n",
				r.Name, r.Requests, checks, calls, checks/max(calls, 1), float64(r.Requests)-checks, ev, cl, verdict(checks <= float64(r.Requests) && calls <= ev))
		case strings.Contains(r.Name, "unknown"):
			loads := sumMetric(r.Metrics, "caddy_rpm_store_loads_total")
			// A random key the filter lets through (a false positive) is
			// loaded once: an L2 GET and a store load. The filter's rate
			// depends on the keys in the store, many with a users scenario.
			passed := float64(r.Requests) - sumMetric(r.Metrics, "caddy_rpm_key_filter_rejections_total")
			p("- %s: %d random well-formed keys at %.0f req/s (%.3f × plain), %d answered 401; %.0f refused by the key filter, %.0f passed it (%.3f %%, its false positives: ≈ 0.02 %% right after a build), %.0f store loads, %.0f client-issued Redis commands (target: 0 store loads and 0 Redis commands beyond one load and one L2 GET per false positive, and at most 0.1 %% false positives): %s\n",
				r.Name, r.Requests, r.RPS, r.RPS/base.RPS, r.Statuses[401],
				float64(r.Requests)-passed, passed, 100*passed/float64(max(r.Requests, 1)), loads, cl,
				verdict(loads <= passed && cl <= passed && passed <= 0.001*float64(r.Requests)))
		case strings.Contains(r.Name, "refus"):
			// The refused site's Caddy has reservations on (the default
			// reservation_ttl, 250 ms), so a refusal holds 62.5 ms and
			// then one request rechecks. The first refusal at a
			// segment's start or at a window's takes up to 3 calls: its
			// own, one for the requests sent meanwhile, and a recheck.
			segments := float64(sat.Rounds)
			firsts := segments * (1 + math.Ceil(r.Seconds/segments/60))
			calls := r.Seconds/refusedRecheck.Seconds() + 3*firsts
			p("- %s Redis round trips: %.0f client-issued commands (%.0f EVALSHA) for %d requests, %s per request (target: no script call but one recheck per %v of the scenario's %.1f s and 3 per first refusal of a segment or window, at most %.0f): %s\n",
				r.Name, cl, ev, r.Requests, perReq(cl, r.Requests), refusedRecheck, r.Seconds, calls, verdict(ev <= calls))
		}
	}
	for _, line := range alternationTargets(cfg, rep) {
		p("- %s\n", line)
	}
	if rep.PG != nil {
		p("- Postgres store loads: %.0f in all; %.0f by background reloads (caddy_rpm_store_reloads_total: keys in use whose l2_ttl ended, one query per batch); on the request path %.0f of random keys that passed the key filter, %.0f in the key-range scenarios (keys read less than once per half l1_ttl expire), %.0f others (target 0); %.0f table scans in the schema (the loads' index scans, those of the passes over the key ranges included): %s\n",
			loads, reloads, fpLoads, rangeLoads, otherLoads, rep.PG["scans"], verdict(otherLoads == 0))
	}
	return b.String()
}

// refusedRecheck is how long the refused scenario's Caddy keeps a
// refusal before one request rechecks: reservation_ttl (250 ms by
// default) / 4.
const refusedRecheck = 62500 * time.Microsecond

// cappedLine compares the admitted path under a concurrency cap that is
// never reached with the same path without one (issue 15): throughput
// within 0.03 × plain of it, and at most one extra client-issued Redis
// command per request — the release, sent asynchronously and batched —
// while each request waits for at most one script call: most take a spare
// place reserved with the units (limiter/places.go) and send none (the
// EVALSHAs beyond the script calls are the lease renewals, one per 5 s).
func cappedLine(base, admitted, r *scenarioResult) string {
	perRequest := func(s *scenarioResult) float64 {
		return clientCommands(s.Redis) / float64(max(s.Requests, 1))
	}
	extra := perRequest(r) - perRequest(admitted)
	calls := sumMetric(r.Metrics, "caddy_rpm_redis_checks_per_call_count")
	checks := sumMetric(r.Metrics, "caddy_rpm_redis_checks_per_call_sum")
	ev := r.Redis["evalsha"] + r.Redis["eval"]
	rc, ra := r.RPS/base.RPS, admitted.RPS/base.RPS
	return fmt.Sprintf("%s (concurrency cap never reached): throughput %.3f × plain, admitted %.3f (target: at most 0.03 below): %s; "+
		"%.3f client-issued Redis commands per request, %.3f more than admitted (%.0f ZREM; target ≤ 1 extra): %s; "+
		"%d requests sent %.0f checks in %.0f script calls, %.0f EVAL/EVALSHA beyond them (renewals) (target: each request waits for at most 1 round trip): %s",
		r.Name, rc, ra, verdict(ra-rc <= 0.03),
		perRequest(r), extra, r.Redis["zrem"], verdict(extra <= 1),
		r.Requests, checks, calls, ev-calls, verdict(checks <= float64(r.Requests) && ev >= calls))
}

// cpuBudget says how much machine CPU per request the scenario may use for
// 0.90 × plain when the machine is CPU-bound (throughput is then inversely
// proportional to it), and where its extra went.
func cpuBudget(cfg config, base, r *scenarioResult) string {
	perReqUS := func(res *scenarioResult, key string) float64 {
		return res.CPU[key] / float64(max(res.Requests, 1)) * 1e6
	}
	budget := perReqUS(base, "cpu:machine-busy") / 0.90
	used := perReqUS(r, "cpu:machine-busy")
	var parts []string
	var named float64
	for _, name := range cfg.pids.names() {
		d := perReqUS(r, "cpu:"+name) - perReqUS(base, "cpu:"+name)
		named += d
		parts = append(parts, fmt.Sprintf("%s %+.1f", name, d))
	}
	extra := used - perReqUS(base, "cpu:machine-busy")
	parts = append(parts, fmt.Sprintf("others %+.1f", extra-named))
	return fmt.Sprintf("%s machine CPU per request: %.1f µs against %.1f for plain; 0.90 × plain allows at most %.1f (+%.1f), it added %+.1f (%s)",
		r.Name, used, perReqUS(base, "cpu:machine-busy"), budget, budget-perReqUS(base, "cpu:machine-busy"), extra, strings.Join(parts, ", "))
}

func phaseMarkdown(p func(string, ...any), cfg config, rep *report, ph *phase) {
	base := ph.scenario(cfg.baseline)
	p("\n#### Phase %s: %d connections\n\n", ph.Name, ph.Connections)
	p("| scenario | requests | req/s | × plain | p50 ms | p90 ms | p99 ms | p99 added ms | statuses | errors | EVALSHA / req | client cmds / req | other client cmds (total) | store loads |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|\n")
	for _, r := range ph.Scenarios {
		ratio, added := "-", "-"
		if base != nil && base.RPS > 0 {
			ratio = fmt.Sprintf("%.3f", r.RPS/base.RPS)
			added = fmt.Sprintf("%+.3f", r.P99ms-base.P99ms)
		}
		p("| %s | %d | %.0f | %s | %.3f | %.3f | %.3f | %s | %s | %d | %s | %s | %s | %.0f |\n",
			r.Name, r.Requests, r.RPS, ratio, r.P50ms, r.P90ms, r.P99ms, added, statuses(r.Statuses), r.Errors,
			perReq(r.Redis["evalsha"], r.Requests), perReq(clientCommands(r.Redis), r.Requests), otherClient(r.Redis),
			sumMetric(r.Metrics, "caddy_rpm_store_loads_total"))
	}

	p("\nScript-internal Redis commands per request (INFO commandstats counts them; no client sends them), and Redis execution time of EVALSHA:\n\n")
	p("| scenario | %s | EVALSHA µs/call (in Redis) |\n|---|%s---:|\n", strings.ToUpper(strings.Join(scriptInternal, " | ")), strings.Repeat("---:|", len(scriptInternal)))
	for _, r := range ph.Scenarios {
		p("| %s |", r.Name)
		for _, c := range scriptInternal {
			p(" %s |", perReq(r.Redis[c], r.Requests))
		}
		us := "-"
		if r.Redis["evalsha"] > 0 {
			us = fmt.Sprintf("%.2f", r.RedisUsec["evalsha"]/r.Redis["evalsha"])
		}
		p(" %s |\n", us)
	}

	p("\nCaddy rpm decisions (from /metrics deltas):\n\n| scenario | admitted | refused by Redis | refused locally (deny cache) | refused at authentication (by the key filter) | fail-open | Redis errors | invalidations applied |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range ph.Scenarios {
		m := r.Metrics
		refused := sumMetric(m, "caddy_rpm_decisions_total", `result="refused"`)
		limits := sumMetric(m, "caddy_rpm_decisions_total", `result="refused"`, `_RPM_EXCEEDED`)
		local := sumMetric(m, "caddy_rpm_decisions_total", `result="refused"`, `_local"`)
		p("| %s | %.0f | %.0f | %.0f | %.0f (%.0f) | %.0f | %.0f | %.0f |\n", r.Name,
			sumMetric(m, "caddy_rpm_decisions_total", `result="admitted"`), limits-local, local,
			refused-limits, sumMetric(m, "caddy_rpm_key_filter_rejections_total"),
			sumMetric(m, "caddy_rpm_fail_open_total"), sumMetric(m, "caddy_rpm_redis_errors_total"),
			sumMetric(m, "caddy_rpm_invalidations_total"))
	}

	if len(cfg.pids) > 0 {
		p("\nCPU time per request in µs (user + system from /proc, sampled at 100 Hz, so ± a few µs and the others column can come out slightly negative; the machine's %d cores are shared with other workers' processes):\n\n| scenario |", rep.NumCPU)
		for _, name := range cfg.pids.names() {
			p(" %s |", name)
		}
		p(" sum of these | machine busy | others (machine − sum) | machine busy %% |\n|---|%s\n", strings.Repeat("---:|", len(cfg.pids.names())+4))
		for _, r := range ph.Scenarios {
			n := float64(max(r.Requests, 1))
			p("| %s |", r.Name)
			var sum float64
			for _, name := range cfg.pids.names() {
				v := r.CPU["cpu:"+name]
				sum += v
				p(" %.1f |", v/n*1e6)
			}
			busy, total := r.CPU["cpu:machine-busy"], r.CPU["cpu:machine-total"]
			p(" %.1f | %.1f | %.1f | %.0f%% |\n", sum/n*1e6, busy/n*1e6, (busy-sum)/n*1e6, 100*busy/max(total, 1e-9))
		}
	}

	p("\nPer segment, in run order:\n\n| round | scenario | req/s | p99 ms | machine CPU µs / request | Redis CPU µs / request (in EVALSHA) | × the %s segments around it (req/s) | capacity × them (machine CPU) |\n|---:|---|---:|---:|---:|---:|---:|---:|\n", cfg.baseline)
	seen := map[string]int{}
	for _, s := range ph.Segments {
		ratio, capacity := "-", "-"
		if s.Scenario != cfg.baseline {
			i := seen[s.Scenario]
			rs, cs := pairedRatios(ph, s.Scenario, cfg.baseline), pairedCapacity(ph, s.Scenario, cfg.baseline)
			if i < len(rs) {
				ratio = fmt.Sprintf("%.3f", rs[i])
			}
			if i < len(cs) && len(cs) == len(rs) { // else some segments had no CPU figures
				capacity = fmt.Sprintf("%.3f", cs[i])
			}
			seen[s.Scenario]++
		}
		p("| %d | %s | %.0f | %.3f | %.1f | %.1f (%.1f) | %s | %s |\n", s.Round, s.Scenario, s.RPS, s.P99ms, s.MachineCPUus, s.RedisCPUus, s.ScriptUs, ratio, capacity)
	}
}

func statuses(m map[int]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// keyOf returns the key of the named scenario's target.
func keyOf(cfg config, name string) string {
	t, _ := targetNamed(cfg, name)
	return t.Key
}

// targetNamed returns the named scenario's target.
func targetNamed(cfg config, name string) (target, bool) {
	i := slices.IndexFunc(cfg.targets, func(t target) bool { return t.Name == name })
	if i < 0 {
		return target{}, false
	}
	return cfg.targets[i], true
}

// keyRangeOf returns the key range of the named scenario, or nil.
func keyRangeOf(cfg config, name string) *keyRange {
	kr, _ := parseKeyRange(keyOf(cfg, name))
	return kr
}

// usersLine reports a scenario of many keys: throughput, how often the
// in-process snapshot cache (L1) answered, and the CPU per request of
// Caddy and Redis.
func usersLine(cfg config, kr *keyRange, base, r *scenarioResult) string {
	m := r.Metrics
	l1Hits := sumMetric(m, "caddy_rpm_cache_hits_total", `layer="l1"`)
	l1Misses := sumMetric(m, "caddy_rpm_cache_misses_total", `layer="l1"`)
	ratio := l1Hits / max(l1Hits+l1Misses, 1)
	n := float64(max(r.Requests, 1))
	perUS := func(res *scenarioResult, key string) string {
		if _, ok := res.CPU[key]; !ok {
			return "-"
		}
		return fmt.Sprintf("%.1f", res.CPU[key]/float64(max(res.Requests, 1))*1e6)
	}
	var redisUsec float64
	for k, v := range r.RedisUsec {
		if !slices.Contains(scriptInternal, k) && !slices.Contains(own, k) {
			redisUsec += v
		}
	}
	return fmt.Sprintf("%s (%d keys of as many users, each request one drawn uniformly at random): %.0f req/s, %.3f × plain; "+
		"L1 hit ratio %.4f (%.0f hits, %.0f misses; target ≥ 0.97): %s; L2 hit ratio (hits / lookups) %s; %.0f store loads; "+
		"Caddy CPU per request %s µs (plain %s); Redis CPU per request %s µs (process, from /proc), of which %.1f µs executing commands (INFO commandstats); "+
		"per request %s EVALSHA, %s GET, %s client commands",
		r.Name, kr.n, r.RPS, r.RPS/base.RPS,
		ratio, l1Hits, l1Misses, verdict(ratio >= 0.97), cacheHits(m, "l2"), sumMetric(m, "caddy_rpm_store_loads_total"),
		perUS(r, "cpu:caddy"), perUS(base, "cpu:caddy"), perUS(r, "cpu:redis"), redisUsec/n,
		perReq(r.Redis["evalsha"], r.Requests), perReq(r.Redis["get"], r.Requests), perReq(clientCommands(r.Redis), r.Requests))
}
