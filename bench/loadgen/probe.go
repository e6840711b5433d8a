package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// counters is a set of named monotonic counters read at one moment.
type counters map[string]float64

// delta returns after - before for every name in after.
func delta(before, after counters) counters {
	d := counters{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}

func (c counters) add(o counters) {
	for k, v := range o {
		c[k] += v
	}
}

// redisCommandStats reads INFO commandstats: calls per command, e.g.
// "evalsha" -> 123. Commands called by Lua scripts are counted too.
// usec is the time Redis spent executing each command (for EVALSHA, the
// whole script, including the commands it calls).
func redisCommandStats(ctx context.Context, rdb *redis.Client) (calls, usec counters, err error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, nil, fmt.Errorf("redis info commandstats: %w", err)
	}
	out, us := counters{}, counters{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		cmd := strings.TrimPrefix(name, "cmdstat_")
		for _, field := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(field, "=")
			if k != "calls" && k != "usec" {
				continue
			}
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("redis info commandstats: %q: %w", line, err)
			}
			if k == "calls" {
				out[cmd] = n
			} else {
				us[cmd] = n
			}
		}
	}
	return out, us, nil
}

// caddyMetrics reads the caddy_rpm_* series of Caddy's admin /metrics,
// keyed by the series as written (name{labels}).
func caddyMetrics(ctx context.Context, url string) (counters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, b)
	}
	out := counters{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_rpm_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sumMetric adds up every series of the metric name whose labels contain
// all of the given label pairs (e.g. `result="refused"`).
func sumMetric(c counters, name string, labels ...string) float64 {
	var s float64
next:
	for series, v := range c {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(series, l) {
				continue next
			}
		}
		s += v
	}
	return s
}

// pgStats reads the table statistics of schema from a fresh connection
// (statistics are per-transaction snapshots): scans of every kind on the
// schema's tables, and rows changed. Backends publish their counters at
// the end of a transaction, at most once per second, and idle ones within
// about 10 s, so a reading is exact only after that delay.
func pgStats(ctx context.Context, dsn, schema string) (counters, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres stats: %w", err)
	}
	defer c.Close(ctx)
	var scans, changes, tables int64
	err = c.QueryRow(ctx, `select
	coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint,
	coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint,
	count(*)
from pg_stat_user_tables where schemaname = $1`, schema).Scan(&scans, &changes, &tables)
	if err != nil {
		return nil, fmt.Errorf("postgres stats: %w", err)
	}
	if tables == 0 {
		return nil, fmt.Errorf("postgres stats: schema %q has no tables", schema)
	}
	return counters{"scans": float64(scans), "changes": float64(changes)}, nil
}

// captureProfile saves a CPU profile of Caddy (admin /debug/pprof) taken
// over most of a segment of length d.
func captureProfile(ctx context.Context, adminURL, dir, name string, d time.Duration) error {
	secs := max(int((d-time.Second)/time.Second), 1)
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimRight(adminURL, "/"), secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(filepath.Join(dir, "cpu-"+name+".pprof"))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
