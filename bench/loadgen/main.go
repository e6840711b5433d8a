// Command loadgen is the benchmark driver of caddy-rpm: a keep-alive
// HTTP/1.1 load generator with fixed concurrency that runs each scenario
// (target) in turn, interleaved over several rounds, and measures around
// every segment: throughput, latency percentiles, Redis commands (INFO
// commandstats of a private redis-server), Caddy's caddy_rpm_* metrics and
// Postgres table scans of the benchmark schema. It only targets 127.0.0.1.
//
// It prints the results as JSON on stdout and writes a markdown report.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type targetsFlag []target

func (f *targetsFlag) String() string { return fmt.Sprint(*f) }

// Set parses name|127.0.0.1:port|path|key|expected-status.
func (f *targetsFlag) Set(s string) error {
	p := strings.Split(s, "|")
	if len(p) != 5 {
		return errors.New("want name|127.0.0.1:port|path|key|status")
	}
	if err := checkAddrPath(p[1], p[2]); err != nil {
		return fmt.Errorf("target %q: %w", p[0], err)
	}
	status, err := strconv.Atoi(p[4])
	if err != nil {
		return fmt.Errorf("target %q: status: %w", p[0], err)
	}
	if _, err := parseKeyRange(p[3]); err != nil {
		return fmt.Errorf("target %q: %w", p[0], err)
	}
	*f = append(*f, target{Name: p[0], Addr: p[1], Path: p[2], Key: p[3], Expect: status})
	return nil
}

// checkAddrPath accepts 127.0.0.1:<port> and an absolute path: the load
// generator never targets another host.
func checkAddrPath(addr, path string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return fmt.Errorf("%q: only 127.0.0.1:<port> may be targeted", addr)
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("path %q must start with /", path)
	}
	return nil
}

// stringsFlag collects the values of a repeatable flag.
type stringsFlag []string

func (f *stringsFlag) String() string     { return strings.Join(*f, "; ") }
func (f *stringsFlag) Set(s string) error { *f = append(*f, s); return nil }

type config struct {
	targets     targetsFlag
	baseline    string
	connections int
	warmup      time.Duration
	duration    time.Duration
	rounds      int
	redisAddr   string
	metricsURLs stringsFlag
	pgDSN       string
	pgSchema    string
	pgSettle    time.Duration
	mdPath      string
	notes       stringsFlag
	pprofURL    string
	pprofDir    string
	pprofFor    stringsFlag // name=URL: the profile of that scenario from another Caddy
	pids        pidsFlag

	latConnections int
	latDuration    time.Duration

	exacts        exactsFlag
	exactDuration time.Duration

	alternate         stringsFlag
	alternateDuration time.Duration
	slice             time.Duration
}

func main() {
	var cfg config
	flag.Var(&cfg.targets, "target", "scenario as name|127.0.0.1:port|path|key|expected-status (repeatable; the order is the run order); key "+RandomKey+": a new random well-formed key per request; key "+keyRangeTag+"<prefix>:<n>: one of n keys (<prefix> and 1 … n zero-padded to the length of a generated key) drawn uniformly at random per request, each sent once in order at the start of the warm-up")
	flag.StringVar(&cfg.baseline, "baseline", "plain", "the scenario the others are compared with")
	flag.IntVar(&cfg.connections, "connections", 32, "concurrent keep-alive connections")
	flag.DurationVar(&cfg.warmup, "warmup", 10*time.Second, "warm-up, split over the scenarios")
	flag.DurationVar(&cfg.duration, "duration", 20*time.Second, "measured time per scenario, split over the rounds")
	flag.IntVar(&cfg.latConnections, "latency-connections", 0, "if > 0, a second phase at this (low) concurrency, where latency is service time rather than queueing")
	flag.DurationVar(&cfg.latDuration, "latency-duration", 0, "measured time per scenario in the second phase (default: -duration / 2)")
	flag.IntVar(&cfg.rounds, "rounds", 2, "interleaved rounds; each runs every scenario once, in rotated order")
	flag.StringVar(&cfg.redisAddr, "redis", "", "host:port of the (private) Redis server to read INFO commandstats from")
	flag.Var(&cfg.metricsURLs, "metrics", "a Caddy admin /metrics URL (repeatable: the caddy_rpm_* series of all are summed)")
	flag.StringVar(&cfg.pgDSN, "pg", "", "Postgres DSN to read statistics with")
	flag.StringVar(&cfg.pgSchema, "schema", "", "the benchmark's Postgres schema")
	flag.DurationVar(&cfg.pgSettle, "pg-settle", 11*time.Second, "wait before reading Postgres statistics (idle backends publish them within 10 s)")
	flag.StringVar(&cfg.mdPath, "md", "", "write the markdown report here")
	flag.StringVar(&cfg.pprofURL, "pprof", "", "Caddy admin base URL: capture a CPU profile of Caddy during each scenario's first segment (skews that segment)")
	flag.StringVar(&cfg.pprofDir, "pprof-dir", ".", "directory for the cpu-<scenario>.pprof files")
	flag.Var(&cfg.pprofFor, "pprof-for", "scenario=Caddy admin base URL: profile that scenario in another Caddy than -pprof's (repeatable)")
	flag.Var(&cfg.pids, "pid", "name=pid of a process whose CPU time per request to report (repeatable; pid self = the load generator)")
	flag.Var(&cfg.exacts, "exact", "after the phases, drive one user to its limit through several Caddy processes at once: name|127.0.0.1:port,127.0.0.1:port|path|key|limit|user-id (repeatable)")
	flag.DurationVar(&cfg.exactDuration, "exact-duration", 10*time.Second, "how long each -exact run drives its user (all within one rate-limit window)")
	flag.Var(&cfg.alternate, "alternate", "after the phases, alternate this scenario with the baseline every -slice (repeatable; see alternate.go)")
	flag.DurationVar(&cfg.alternateDuration, "alternate-duration", 10*time.Second, "the scenario's time in each alternation (the baseline's is one -slice longer)")
	flag.DurationVar(&cfg.slice, "slice", 250*time.Millisecond, "how long an alternation drives one side before it switches")
	flag.Var(&cfg.notes, "note", "a line for the report's header (repeatable)")
	flag.Parse()
	if len(cfg.targets) == 0 || cfg.connections < 1 || cfg.rounds < 1 || cfg.duration <= 0 {
		log.Fatal("loadgen: need at least one -target, -connections >= 1, -rounds >= 1, -duration > 0")
	}
	if len(cfg.exacts) > 0 && (cfg.redisAddr == "" || cfg.exactDuration <= 0 || cfg.exactDuration > 50*time.Second) {
		log.Fatal("loadgen: -exact needs -redis and 0 < -exact-duration <= 50s (a run must fit in one window)")
	}
	if len(cfg.alternate) > 0 && (cfg.slice <= 0 || cfg.alternateDuration < cfg.slice) {
		log.Fatal("loadgen: -alternate needs -slice > 0 and -alternate-duration >= -slice")
	}
	if cfg.latDuration <= 0 {
		cfg.latDuration = cfg.duration / 2
	}
	log.SetFlags(log.Ltime)
	rep, err := bench(context.Background(), cfg)
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
	md := markdown(cfg, rep)
	if cfg.mdPath != "" {
		if err := os.WriteFile(cfg.mdPath, []byte(md), 0o644); err != nil {
			log.Fatalf("loadgen: %v", err)
		}
	}
	fmt.Fprintln(os.Stderr, md)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

// segment is one timed run of one scenario.
type segment struct {
	Scenario string  `json:"scenario"`
	Round    int     `json:"round"`
	RPS      float64 `json:"rps"`
	P99ms    float64 `json:"p99_ms"`
	// MachineCPUus is the machine's busy CPU time per request in µs, all
	// processes together (0: not measured).
	MachineCPUus float64 `json:"machine_cpu_us_per_request,omitempty"`
	// RedisCPUus is redis-server's CPU time per request in µs, and
	// ScriptUs its time in EVALSHA (INFO commandstats) per request: a
	// scenario's Redis cost segment by segment, as the window each
	// segment falls in changes it (0: not measured).
	RedisCPUus float64 `json:"redis_cpu_us_per_request,omitempty"`
	ScriptUs   float64 `json:"evalsha_us_per_request,omitempty"`
}

// scenarioResult aggregates a scenario's segments within one phase.
type scenarioResult struct {
	Name       string        `json:"name"`
	Requests   int64         `json:"requests"`
	Errors     int64         `json:"errors"`
	Seconds    float64       `json:"seconds"`
	RPS        float64       `json:"rps"`
	P50ms      float64       `json:"p50_ms"`
	P90ms      float64       `json:"p90_ms"`
	P99ms      float64       `json:"p99_ms"`
	Statuses   map[int]int64 `json:"statuses"`
	Unexpected int64         `json:"unexpected_status"`
	Redis      counters      `json:"redis_commands"`
	RedisUsec  counters      `json:"redis_usec"`
	Metrics    counters      `json:"caddy_metrics"`
	CPU        counters      `json:"cpu_seconds"`
	latencies  []int64
}

// phase is one pass over all scenarios at one concurrency.
type phase struct {
	Name        string            `json:"name"`
	Connections int               `json:"connections"`
	Rounds      int               `json:"rounds"`
	Segment     string            `json:"segment"`
	Scenarios   []*scenarioResult `json:"scenarios"`
	Segments    []segment         `json:"segments"`
	LoadBefore  string            `json:"load_before"`
	LoadAfter   string            `json:"load_after"`
}

func (ph *phase) scenario(name string) *scenarioResult {
	for _, r := range ph.Scenarios {
		if r.Name == name {
			return r
		}
	}
	return nil
}

type report struct {
	Started    time.Time      `json:"started"`
	GoMaxProcs int            `json:"loadgen_gomaxprocs"`
	NumCPU     int            `json:"num_cpu"`
	Phases     []*phase       `json:"phases"`
	PG         counters       `json:"postgres"`
	PGNote     string         `json:"postgres_note"`
	Exact      []*exactResult `json:"exact,omitempty"`
	// Alternations are in the order of -alternate.
	Alternations []*alternation `json:"alternations,omitempty"`
}

func bench(ctx context.Context, cfg config) (*report, error) {
	rep := &report{Started: time.Now(), GoMaxProcs: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU()}
	var rdb *redis.Client
	if cfg.redisAddr != "" {
		rdb = redis.NewClient(&redis.Options{Addr: cfg.redisAddr, PoolSize: 1, Protocol: 2, DisableIdentity: true})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis %s: %w", cfg.redisAddr, err)
		}
	}

	// Warm-up: connections, caches, the runtime's heap and pools. A key
	// range is first sent once key by key, so that the timed warm-up and
	// the segments start with every key loaded.
	per := max(cfg.warmup/time.Duration(len(cfg.targets)), time.Second)
	passes := keyPasses{}
	for _, t := range cfg.targets {
		passes.pass(t, cfg.connections, "warm-up")
		log.Printf("warm-up %s for %v", t.Name, per)
		s := run(t, cfg.connections, per)
		log.Printf("  %.0f req/s, statuses %v, errors %d", float64(s.Requests)/s.Elapsed.Seconds(), s.Statuses, s.Errors)
		if s.Requests == 0 {
			return nil, fmt.Errorf("warm-up %s: no response (errors %d)", t.Name, s.Errors)
		}
	}

	var pgBefore counters
	if cfg.pgDSN != "" {
		log.Printf("waiting %v for Postgres statistics to settle", cfg.pgSettle)
		time.Sleep(cfg.pgSettle)
		var err error
		if pgBefore, err = pgStats(ctx, cfg.pgDSN, cfg.pgSchema); err != nil {
			return nil, err
		}
	}

	phases := []*phase{{Name: "saturated", Connections: cfg.connections, Rounds: cfg.rounds,
		Segment: (cfg.duration / time.Duration(cfg.rounds)).String()}}
	if cfg.latConnections > 0 {
		phases = append(phases, &phase{Name: "unsaturated", Connections: cfg.latConnections, Rounds: cfg.rounds,
			Segment: (cfg.latDuration / time.Duration(cfg.rounds)).String()})
	}
	for _, ph := range phases {
		if err := runPhase(ctx, cfg, rdb, ph, passes); err != nil {
			return nil, err
		}
		rep.Phases = append(rep.Phases, ph)
	}
	if len(cfg.alternate) > 0 {
		var err error
		if rep.Alternations, err = runAlternations(ctx, cfg, rdb, passes); err != nil {
			return nil, err
		}
	}
	for _, e := range cfg.exacts {
		res, err := runExact(ctx, cfg, rdb, e)
		if err != nil {
			return nil, err
		}
		rep.Exact = append(rep.Exact, res)
	}

	if cfg.pgDSN != "" {
		log.Printf("waiting %v for Postgres statistics to settle", cfg.pgSettle)
		time.Sleep(cfg.pgSettle)
		pgAfter, err := pgStats(ctx, cfg.pgDSN, cfg.pgSchema)
		if err != nil {
			return nil, err
		}
		rep.PG = delta(pgBefore, pgAfter)
		rep.PGNote = "sum of seq_scan + idx_scan (and rows changed) over pg_stat_user_tables of schema " + cfg.pgSchema +
			", from the end of the warm-up to the end of the last segment, each read after a " + cfg.pgSettle.String() + " settle"
	}
	return rep, nil
}

// Passes over the key ranges
//
// A key range's scenario reads its keys only during its own segments,
// seconds in every round of a minute or more, so a key may go unread for
// minutes; traffic as steady as a segment's would read it every few
// seconds, and so keep it in L1 and L2 (reloaded ahead of l1_ttl). Left
// alone, keys would expire from the caches mid-run and the segments wait
// for L2 reads and store loads that steady traffic never causes. So the
// warm-up sends each key once, and a round starts with another such pass
// over each range passed over more than keyPassEvery ago: every key is
// then read at least once per keyPassEvery plus one round (a round of the
// default run takes about 70 s), within half the default l1_ttl of 5 min,
// when a read reloads an entry ahead of its end.

const (
	// keyPassEvery is how long a key range may go without a pass.
	keyPassEvery = 75 * time.Second
	// rangeSettle is how long a round waits after a pass over the key
	// ranges, for the background reloads the pass set off (L2 reads,
	// store loads).
	rangeSettle = 3 * time.Second
)

// keyPasses is when each key range's target was last passed over.
type keyPasses map[string]time.Time

// pass sends each key of t's key range once, if t has one.
func (kp keyPasses) pass(t target, connections int, why string) {
	kr, _ := parseKeyRange(t.Key)
	if kr == nil {
		return
	}
	log.Printf("%s %s: each of %d keys once", why, t.Name, kr.n)
	s := runEach(t, connections)
	log.Printf("  %d requests in %v (%.0f req/s), statuses %v, errors %d", s.Requests, s.Elapsed.Round(time.Millisecond),
		float64(s.Requests)/s.Elapsed.Seconds(), s.Statuses, s.Errors)
	kp[t.Name] = time.Now()
}

// due reports whether t's key range, if it has one, was last passed over
// more than keyPassEvery before now (or never).
func (kp keyPasses) due(t target, now time.Time) bool {
	kr, _ := parseKeyRange(t.Key)
	return kr != nil && now.Sub(kp[t.Name]) > keyPassEvery
}

// refresh passes over the key ranges that are due, then lets the reloads
// they set off settle.
func (kp keyPasses) refresh(targets []target, connections int, why string) {
	passed := false
	for _, t := range targets {
		if kp.due(t, time.Now()) {
			kp.pass(t, connections, why)
			passed = true
		}
	}
	if passed {
		time.Sleep(rangeSettle)
	}
}

// profileURL is the admin URL of the Caddy that serves the named scenario,
// for its profile; "" when profiles are off.
func (cfg *config) profileURL(name string) string {
	if cfg.pprofURL == "" {
		return ""
	}
	for _, f := range cfg.pprofFor {
		if n, url, ok := strings.Cut(f, "="); ok && n == name {
			return url
		}
	}
	return cfg.pprofURL
}

// roundOrder is the run order of one round: the scenarios other than the
// baseline in an order rotated by one per round, each right after a
// segment of the baseline, and the baseline once more at the end. So every
// scenario's segment sits between two of the baseline's, seconds apart,
// and is compared with them (pairedRatios): this machine's speed drifts by
// ±10 % within minutes, far more than within one segment's neighbourhood.
// Without the baseline among targets, just the rotated order.
func roundOrder(targets []target, baseline string, round int) []target {
	var others []target
	var base *target
	for i, t := range targets {
		if t.Name == baseline {
			base = &targets[i]
			continue
		}
		others = append(others, t)
	}
	n := len(others)
	var order []target
	for i := range n {
		if base != nil {
			order = append(order, *base)
		}
		order = append(order, others[(i+round)%n])
	}
	if base != nil {
		order = append(order, *base)
	}
	return order
}

// runPhase runs ph.Rounds rounds, each in roundOrder, one segment per
// entry, and measures around each segment. A round starts with the passes
// over key ranges that are due (see keyPasses).
func runPhase(ctx context.Context, cfg config, rdb *redis.Client, ph *phase, passes keyPasses) error {
	segLen, err := time.ParseDuration(ph.Segment)
	if err != nil {
		return err
	}
	for _, t := range cfg.targets {
		ph.Scenarios = append(ph.Scenarios, newScenarioResult(t.Name))
	}
	ph.LoadBefore = loadavg()
	profiled := map[string]bool{}
	for round := range ph.Rounds {
		passes.refresh(cfg.targets, cfg.connections, fmt.Sprintf("%s round %d", ph.Name, round+1))
		for _, t := range roundOrder(cfg.targets, cfg.baseline, round) {
			r := ph.scenario(t.Name)
			var prof chan error
			if url := cfg.profileURL(t.Name); url != "" && !profiled[t.Name] {
				profiled[t.Name] = true
				prof = make(chan error, 1)
				go func() {
					prof <- captureProfile(ctx, url, cfg.pprofDir, ph.Name+"-"+t.Name, segLen)
				}()
			}
			var s sample
			d, err := measured(ctx, cfg, rdb, func() { s = run(t, ph.Connections, segLen) })
			if prof != nil {
				if err := <-prof; err != nil {
					log.Printf("profile %s: %v", t.Name, err)
				}
			}
			if err != nil {
				return err
			}
			r.add(d, s, t.Expect)
			slices.Sort(s.Latencies)
			n := float64(max(s.Requests, 1))
			seg := segment{Scenario: t.Name, Round: round + 1,
				RPS: float64(s.Requests) / s.Elapsed.Seconds(), P99ms: pct(s.Latencies, 0.99),
				MachineCPUus: d.cpu["cpu:machine-busy"] / n * 1e6,
				RedisCPUus:   d.cpu["cpu:redis"] / n * 1e6, ScriptUs: d.redisUsec["evalsha"] / n}
			ph.Segments = append(ph.Segments, seg)
			log.Printf("%s c=%d round %d %-9s %8.0f req/s  p99 %.3f ms  machine CPU %.1f µs/req  Redis CPU %.1f µs/req  statuses %v errors %d",
				ph.Name, ph.Connections, seg.Round, t.Name, seg.RPS, seg.P99ms, seg.MachineCPUus, seg.RedisCPUus, s.Statuses, s.Errors)
		}
	}
	ph.LoadAfter = loadavg()
	for _, r := range ph.Scenarios {
		r.finish()
	}
	return nil
}

// deltas are the changes of the counters read around a measured run.
type deltas struct {
	redis, redisUsec, metrics, cpu counters
}

// measured runs f and returns what Redis's commandstats, the Caddy
// processes' caddy_rpm_* metrics and the processes' CPU times changed by
// while it ran.
func measured(ctx context.Context, cfg config, rdb *redis.Client, f func()) (deltas, error) {
	redisBefore, usecBefore, metricsBefore, err := readCounters(ctx, rdb, cfg.metricsURLs)
	if err != nil {
		return deltas{}, err
	}
	cpuBefore, err := cpuTimes(cfg.pids)
	if err != nil {
		return deltas{}, err
	}
	f()
	cpuAfter, err := cpuTimes(cfg.pids)
	if err != nil {
		return deltas{}, err
	}
	redisAfter, usecAfter, metricsAfter, err := readCounters(ctx, rdb, cfg.metricsURLs)
	if err != nil {
		return deltas{}, err
	}
	return deltas{redis: delta(redisBefore, redisAfter), redisUsec: delta(usecBefore, usecAfter),
		metrics: delta(metricsBefore, metricsAfter), cpu: delta(cpuBefore, cpuAfter)}, nil
}

// newScenarioResult returns an empty result named name.
func newScenarioResult(name string) *scenarioResult {
	return &scenarioResult{Name: name, Statuses: map[int]int64{},
		Redis: counters{}, RedisUsec: counters{}, Metrics: counters{}, CPU: counters{}}
}

// add counts a measured sample; a status not in expect is unexpected.
func (r *scenarioResult) add(d deltas, s sample, expect ...int) {
	r.CPU.add(d.cpu)
	r.Redis.add(d.redis)
	r.RedisUsec.add(d.redisUsec)
	r.Metrics.add(d.metrics)
	r.Requests += s.Requests
	r.Errors += s.Errors
	r.Seconds += s.Elapsed.Seconds()
	for st, c := range s.Statuses {
		r.Statuses[st] += c
		if !slices.Contains(expect, st) {
			r.Unexpected += c
		}
	}
	r.latencies = append(r.latencies, s.Latencies...)
}

// finish computes the rates and percentiles once every sample is added.
func (r *scenarioResult) finish() {
	slices.Sort(r.latencies)
	r.RPS = float64(r.Requests) / r.Seconds
	r.P50ms, r.P90ms, r.P99ms = pct(r.latencies, 0.50), pct(r.latencies, 0.90), pct(r.latencies, 0.99)
	r.latencies = nil
}

// readCounters reads Redis's commandstats and the caddy_rpm_* metrics,
// summed over all Caddy processes: in a segment one of them does the work
// and the others idle, and an exact run drives several at once.
func readCounters(ctx context.Context, rdb *redis.Client, metricsURLs []string) (calls, usec, metrics counters, err error) {
	calls, usec, metrics = counters{}, counters{}, counters{}
	if rdb != nil {
		if calls, usec, err = redisCommandStats(ctx, rdb); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, u := range metricsURLs {
		m, err := caddyMetrics(ctx, u)
		if err != nil {
			return nil, nil, nil, err
		}
		metrics.add(m)
	}
	return calls, usec, metrics, nil
}

// pct is the q-quantile of sorted latencies (ns), in ms.
func pct(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e6
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
