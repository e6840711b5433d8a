package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// hangUp sends one request on a raw TCP connection and goes away at once:
// half-closed (CloseWrite, then the answer, if any, is drained) or closed.
func hangUp(addr, key string, half bool) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET /v1/x HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + key + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return err
	}
	if !half {
		return nil
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, conn)
	return nil
}

// settled waits until Caddy's decision counters stop moving, bounded.
func settled(t *testing.T, c *caddyInstance) {
	t.Helper()
	last, stable := -1.0, 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		n := c.metric(t, "caddy_rpm_decisions_total")
		if n == last {
			if stable++; stable == 5 {
				return
			}
		} else {
			last, stable = n, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("decisions still changing after 10 s")
}

// TestClientGoneIsNotRedisFailure: with a healthy Redis and a limit of 7,
// hundreds of requests whose client hangs up right after sending (on a
// warm and on a cold key), mixed with normal ones, never fail open: the
// upstream sees at most 7, fail_open_total stays 0, no Redis or store
// error is counted, no 503 is logged, and the breaker stays closed — the
// next requests are decided by Redis with its counter exact.
func TestClientGoneIsNotRedisFailure(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "redis_timeout 1s", "")
	uid := storetest.SeedUser(t, e.pool, 7)
	_, warm := e.seedKey(t, uid, nil)
	_, cold := e.seedKey(t, uid, nil) // first seen by a hang-up
	// One normal request puts the warm key's snapshot in L1 (and spends 1
	// of the 7).
	redistest.WaitForWindow(t, e.rdb, 20*time.Second)
	limExpect(t, c, "/v1/x", warm, []int{http.StatusOK}, "")
	addr := fmt.Sprintf("127.0.0.1:%d", c.HTTPPort)

	const hangUps, workers = 300, 16
	var (
		wg    sync.WaitGroup
		tally limTally // the normal requests' statuses and every client error
		jobs  = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				if i >= hangUps {
					tally.add(limHit(c.URL+"/v1/x", warm))
					continue
				}
				key := warm
				if i%3 == 0 {
					key = cold
				}
				if err := hangUp(addr, key, i%2 == 0); err != nil {
					tally.add(0, err)
				}
			}
		})
	}
	for i := range hangUps {
		jobs <- i
		if i%10 == 9 { // a normal request after every nine hang-ups
			jobs <- hangUps + i
		}
	}
	close(jobs)
	wg.Wait()
	tally.check(t)
	settled(t, c)

	logs := c.Logs()
	gone := c.metric(t, "caddy_rpm_decisions_total", `result="client_gone"`)
	t.Logf("normal requests: %v; client_gone decisions: %v; upstream saw %d", tally.statuses, gone, len(e.up.headers()))
	if gone == 0 {
		// Without it the test proved nothing: no hang-up was noticed
		// before its request was decided.
		t.Errorf("no client_gone decision among %d hang-ups", hangUps)
	}
	if n := c.metric(t, "caddy_rpm_fail_open_total"); n != 0 {
		t.Errorf("caddy_rpm_fail_open_total = %v with a healthy Redis, want 0", n)
	}
	if n := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="fail_open"`); n != 0 {
		t.Errorf(`decisions{admitted,fail_open} = %v, want 0`, n)
	}
	for _, m := range []string{"caddy_rpm_redis_errors_total", "caddy_rpm_store_errors_total"} {
		if n := c.metric(t, m); n != 0 {
			t.Errorf("%s = %v, want 0: a client that hangs up is no backend failure", m, n)
		}
	}
	if n := c.metric(t, "caddy_rpm_decisions_total", `result="refused"`, `reason="AUTH_UNAVAILABLE"`); n != 0 {
		t.Errorf("%v AUTH_UNAVAILABLE refusals for clients that hung up, want 0", n)
	}
	for _, bad := range []string{"auth snapshot unavailable", "rate limiter backend failed", "circuit breaker opened"} {
		if strings.Contains(logs, bad) {
			t.Errorf("Caddy logged %q for clients that hung up:\n%s", bad, logs)
		}
	}
	if seen := len(e.up.headers()); seen > 7 {
		t.Fatalf("the upstream saw %d requests of a user limited to 7", seen)
	}

	// The breaker is closed and Redis decides: top the counter up to 7 with
	// normal requests, then the next one is refused by the limit.
	n, _ := e.count(t, e.keys.User(uid))
	if n > 7 {
		t.Fatalf("user counter = %d, over the limit of 7", n)
	}
	limExpect(t, c, "/v1/x", warm, limSeq(limRepeat(http.StatusOK, int(7-n)), []int{http.StatusTooManyRequests}), "USER_RPM_EXCEEDED")
	e.wantCount(t, "user", e.keys.User(uid), 7)
	if seen := len(e.up.headers()); seen > 7 {
		t.Fatalf("the upstream saw %d requests of a user limited to 7", seen)
	}
}
