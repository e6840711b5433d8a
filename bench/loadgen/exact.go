package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// exactTarget is one user driven to its limit through several Caddy
// processes at once (issue 14 (c)): the 200s summed over the processes
// must equal the limit.
type exactTarget struct {
	Name  string
	Addrs []string // one per Caddy process, 127.0.0.1:port
	Path  string
	Key   string // a fixed key of the user
	Limit int64  // the user's requests per minute
	User  int64  // the user's id, to read its counter in Redis
}

type exactsFlag []exactTarget

func (f *exactsFlag) String() string { return fmt.Sprint(*f) }

// Set parses name|127.0.0.1:port,127.0.0.1:port|path|key|limit|user-id.
func (f *exactsFlag) Set(s string) error {
	p := strings.Split(s, "|")
	if len(p) != 6 {
		return errors.New("want name|127.0.0.1:port,127.0.0.1:port|path|key|limit|user-id")
	}
	e := exactTarget{Name: p[0], Addrs: strings.Split(p[1], ","), Path: p[2], Key: p[3]}
	for _, a := range e.Addrs {
		if err := checkAddrPath(a, e.Path); err != nil {
			return fmt.Errorf("exact %q: %w", e.Name, err)
		}
	}
	if kr, _ := parseKeyRange(e.Key); kr != nil || e.Key == "" || e.Key == RandomKey {
		return fmt.Errorf("exact %q: the key must be one fixed key", e.Name)
	}
	var err error
	if e.Limit, err = strconv.ParseInt(p[4], 10, 64); err != nil || e.Limit < 1 {
		return fmt.Errorf("exact %q: limit %q must be a positive integer", e.Name, p[4])
	}
	if e.User, err = strconv.ParseInt(p[5], 10, 64); err != nil || e.User < 1 {
		return fmt.Errorf("exact %q: user id %q must be a positive integer", e.Name, p[5])
	}
	*f = append(*f, e)
	return nil
}

// exactResult is the outcome of one exact run. The embedded result holds
// all responses of all processes; its Seconds is the wall time of the run.
type exactResult struct {
	scenarioResult
	Limit int64 `json:"limit"`
	// AdmittedBy is the number of 200s of each process, in -exact order.
	AdmittedBy []int64 `json:"admitted_by_process"`
	// ToLastAdmitted is the time from the start to the last 200.
	ToLastAdmitted float64 `json:"seconds_to_last_admitted"`
	// Counter is the user's counter in Redis once unused reserved units
	// had time to come back; -1 if it was not found in the run's window.
	Counter int64 `json:"redis_counter"`
	// OneWindow tells that the run and the counter's reading happened in
	// one rate-limit window.
	OneWindow bool `json:"one_window"`
	Exact     bool `json:"exact"`
	// FailOpen counts requests admitted without a check because Redis did
	// not answer within redis_timeout (on_redis_error open, the default):
	// on an overloaded machine they are what goes over the limit.
	FailOpen int64 `json:"fail_open"`
	// Why says what made the run not exact ("" when it is).
	Why string `json:"why,omitempty"`
}

func (r *exactResult) admitted() int64 { return r.Statuses[200] }

const (
	// limitWindow is the rate-limit window: fixed minutes of Redis's clock.
	limitWindow = time.Minute
	// handBackSettle is waited after a run before the counter is read: a
	// reservation idle for reservation_ttl (default 250ms) is handed back
	// within that TTL.
	handBackSettle = time.Second
)

// runExact drives e's user through all its processes at once, with the
// connections split between them, for cfg.exactDuration within one
// rate-limit window, and checks that exactly e.Limit requests were
// admitted and that the user's counter in Redis says the same.
func runExact(ctx context.Context, cfg config, rdb *redis.Client, e exactTarget) (*exactResult, error) {
	// Start with room for the run, the settle and the reads in the window.
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("exact %s: redis time: %w", e.Name, err)
	}
	need := cfg.exactDuration + handBackSettle + 2*time.Second
	if left := now.Truncate(limitWindow).Add(limitWindow).Sub(now); left < need {
		log.Printf("exact %s: waiting %v for the next rate-limit window", e.Name, left.Round(time.Millisecond))
		time.Sleep(left + 200*time.Millisecond)
	}
	if now, err = rdb.Time(ctx).Result(); err != nil {
		return nil, fmt.Errorf("exact %s: redis time: %w", e.Name, err)
	}
	window := now.UnixMilli() / limitWindow.Milliseconds()

	per := max(cfg.connections/len(e.Addrs), 1)
	parts := make([]sample, len(e.Addrs))
	var start time.Time
	d, err := measured(ctx, cfg, rdb, func() {
		var wg sync.WaitGroup
		start = time.Now()
		for i, addr := range e.Addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				parts[i] = run(target{Name: e.Name, Addr: addr, Path: e.Path, Key: e.Key}, per, cfg.exactDuration)
			}()
		}
		wg.Wait()
	})
	if err != nil {
		return nil, err
	}
	time.Sleep(handBackSettle)
	counter, err := readCounter(ctx, rdb, e.User, window)
	if err != nil {
		return nil, fmt.Errorf("exact %s: %w", e.Name, err)
	}
	if now, err = rdb.Time(ctx).Result(); err != nil {
		return nil, fmt.Errorf("exact %s: redis time: %w", e.Name, err)
	}

	all := merge(parts)
	res := &exactResult{scenarioResult: *newScenarioResult(e.Name), Limit: e.Limit, Counter: counter,
		OneWindow: now.UnixMilli()/limitWindow.Milliseconds() == window}
	res.add(d, all, 200, 429)
	res.finish()
	for _, s := range parts {
		res.AdmittedBy = append(res.AdmittedBy, s.Statuses[200])
	}
	if !all.LastOK.IsZero() {
		res.ToLastAdmitted = all.LastOK.Sub(start).Seconds()
	}
	res.FailOpen = int64(sumMetric(res.Metrics, "caddy_rpm_fail_open_total"))
	res.Why = res.notExact()
	res.Exact = res.Why == ""
	log.Printf("exact %s: admitted %d %v of limit %d (fail-open %d), refused %d, Redis counter %d, one window %v, errors %d: exact: %s %s",
		e.Name, res.admitted(), res.AdmittedBy, e.Limit, res.FailOpen, res.Statuses[429], counter, res.OneWindow, res.Errors, yesNo(res.Exact), res.Why)
	return res, nil
}

// notExact says why r is not exact, or "" if it is.
func (r *exactResult) notExact() string {
	switch n := r.admitted(); {
	case !r.OneWindow:
		return "the run crossed a window boundary"
	case r.Errors > 0 || r.Unexpected > 0:
		return "transport errors or statuses other than 200 and 429"
	case n > r.Limit && r.FailOpen > 0:
		return fmt.Sprintf("%d admitted over the limit, with %d fail-open admissions (Redis did not answer within redis_timeout)", n-r.Limit, r.FailOpen)
	case n > r.Limit:
		return fmt.Sprintf("%d admitted over the limit", n-r.Limit)
	case n < r.Limit && r.Statuses[429] == 0:
		return "the limit was not reached: lower the limit or drive longer"
	case n < r.Limit:
		return fmt.Sprintf("%d refused below the limit", r.Limit-n)
	case r.Counter != r.Limit:
		return fmt.Sprintf("the counter in Redis is %d", r.Counter)
	}
	return ""
}

// readCounter returns the count of user's own counter in Redis, or -1 if
// it does not exist or belongs to another window than window. It is the
// field "{u<user>}:user" of a counter bucket <ns>c:counts (limiter
// package, layout.go), <ns> depending on the store, so the buckets are
// found with SCAN (the benchmark's Redis is private) and the one holding
// the field is read.
func readCounter(ctx context.Context, rdb *redis.Client, user, window int64) (int64, error) {
	field := fmt.Sprintf("{u%d}:user", user)
	found := 0
	var count int64 = -1
	iter := rdb.Scan(ctx, 0, "*c:counts", 10000).Iterator()
	for iter.Next(ctx) {
		v, err := rdb.HMGet(ctx, iter.Val(), "w", field).Result()
		if err != nil {
			return 0, fmt.Errorf("read the counter of user %d: %w", user, err)
		}
		n, ok := v[1].(string)
		if !ok {
			continue
		}
		found++
		if w, _ := v[0].(string); w == strconv.FormatInt(window, 10) {
			if count, err = strconv.ParseInt(n, 10, 64); err != nil {
				return 0, fmt.Errorf("the counter of user %d: %w", user, err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("scan for the counter buckets: %w", err)
	}
	if found > 1 {
		return 0, fmt.Errorf("user %d has a counter in %d buckets, want one", user, found)
	}
	return count, nil
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
