package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// failTimeout is the redis_timeout of the failure tests.
const failTimeout = 200 * time.Millisecond

// failSetup starts a private redis-server and a Caddy on it with
// on_redis_error mode, and a user with a limit of 3 whose snapshot is
// already in L1 (so only the limiter needs Redis).
func failSetup(t *testing.T, mode string) (*redistest.Server, *limEnv, *caddyInstance, int64, string) {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	e := newLimEnvOn(t, rdb)
	c := e.caddy(t, srv.Addr, fmt.Sprintf("redis_timeout %s\non_redis_error %s", failTimeout, mode), "")
	uid := storetest.SeedUser(t, e.pool, 3)
	_, key := e.seedKey(t, uid, nil)
	redistest.WaitForWindow(t, rdb, 20*time.Second)
	limExpect(t, c, "/v1/x", key, []int{200}, "")
	e.wantCount(t, "user", e.keys.User(uid), 1)
	return srv, e, c, uid, key
}

// failTimed sends one request and returns it with its latency.
func failTimed(t testing.TB, c *caddyInstance, key string) (response, time.Duration) {
	t.Helper()
	start := time.Now()
	r := c.get(t, "/v1/x", key)
	return r, time.Since(start)
}

// failDuringOutage sends n requests while Redis is down, checks each one's
// status and code, and that once the breaker is open (after at most the
// first two requests, which may each pay the timeout) no request takes as
// long as redis_timeout.
func failDuringOutage(t *testing.T, c *caddyInstance, key string, n, status int, code string) {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	defer func() { t.Logf("latencies during the outage: %v", lat) }()
	for i := range n {
		r, d := failTimed(t, c, key)
		lat = append(lat, d.Round(100*time.Microsecond))
		if r.Status != status || (code != "" && r.code() != code) {
			t.Fatalf("request %d during the outage: %d %s, want %d %s", i+1, r.Status, r.Body, status, code)
		}
		limit := failTimeout
		if i < 2 {
			limit = failTimeout + 500*time.Millisecond // pays the timeout, plus scheduling margin
		}
		if d >= limit {
			t.Fatalf("request %d during the outage took %v, want < %v", i+1, d, limit)
		}
	}
}

// failRecovers waits until the limit of 3 is enforced again after Redis
// came back (within 5 s), and checks the counter.
func failRecovers(t *testing.T, e *limEnv, c *caddyInstance, uid int64, key string) {
	t.Helper()
	back := time.Now()
	refused := false
	for time.Since(back) < 5*time.Second {
		r := c.get(t, "/v1/x", key)
		if r.Status == http.StatusTooManyRequests {
			if r.code() != "USER_RPM_EXCEEDED" {
				t.Fatalf("429 after recovery: %s", r.Body)
			}
			refused = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !refused {
		t.Fatalf("limit not enforced within 5 s of Redis coming back:\n%s", c.Logs())
	}
	// The restarted server lost its data; it has counted exactly the
	// admitted requests since.
	e.wantCount(t, "user", e.keys.User(uid), 3)
}

// TestRedisFailOpen: Redis stopped with on_redis_error open → traffic
// flows, fast once the breaker is open, and is counted as fail_open; Redis
// restarted → limits enforced again within 5 s.
func TestRedisFailOpen(t *testing.T) {
	srv, e, c, uid, key := failSetup(t, "open")
	failOpens := c.metric(t, "caddy_rpm_fail_open_total")
	decisions := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="fail_open"`)

	srv.Stop()
	// 20 requests against a limit of 3: all admitted.
	failDuringOutage(t, c, key, 20, http.StatusOK, "")
	if d := c.metric(t, "caddy_rpm_fail_open_total") - failOpens; d != 20 {
		t.Errorf("caddy_rpm_fail_open_total += %v, want 20", d)
	}
	if d := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="fail_open"`) - decisions; d != 20 {
		t.Errorf(`decisions{admitted,fail_open} += %v, want 20`, d)
	}
	if c.metric(t, "caddy_rpm_redis_errors_total") < 1 {
		t.Error("caddy_rpm_redis_errors_total not counted")
	}

	srv.Restart()
	failRecovers(t, e, c, uid, key)
}

// TestRedisFailClosed: with on_redis_error closed the same outage answers
// 503 RATE_LIMIT_UNAVAILABLE, fast; Redis back → admitted and limited again.
func TestRedisFailClosed(t *testing.T) {
	srv, e, c, uid, key := failSetup(t, "closed")
	srv.Stop()
	failDuringOutage(t, c, key, 10, http.StatusServiceUnavailable, "RATE_LIMIT_UNAVAILABLE")
	srv.Restart()
	failRecovers(t, e, c, uid, key)
}

// TestRedisPaused: a hung Redis (SIGSTOP: it accepts connections and
// answers nothing) blocks no request beyond the timeout; resumed → limits
// enforced again.
func TestRedisPaused(t *testing.T) {
	srv, e, c, uid, key := failSetup(t, "open")
	srv.Pause()
	paused := true
	t.Cleanup(func() {
		if paused {
			srv.Resume()
		}
	})
	failDuringOutage(t, c, key, 20, http.StatusOK, "")
	srv.Resume()
	paused = false
	// Resumed, the server kept its data: the counter still holds the
	// warm-up request, so two more are admitted.
	back := time.Now()
	for {
		r := c.get(t, "/v1/x", key)
		if r.Status == http.StatusTooManyRequests {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("limit not enforced within 5 s of Redis resuming")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.wantCount(t, "user", e.keys.User(uid), 3)
}
