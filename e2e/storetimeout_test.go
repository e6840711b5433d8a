package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// A Postgres that stops answering without closing anything (a dead host, a
// broken path): the tcpProxy stalls. Every store call on the request path
// ends within store_timeout; the listener and the pool come back by
// themselves once the database answers again.

const (
	stallStoreTimeout = 500 * time.Millisecond
	// stallBound is how long a request that waits on the stalled store may
	// take: store_timeout and a little.
	stallBound = stallStoreTimeout + 500*time.Millisecond
)

// stallGet sends a GET with key and a client timeout, so that a request
// that hangs fails the test instead of hanging it.
func stallGet(c *caddyInstance, key string, timeout time.Duration) (response, time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, c.URL+"/v1/x", nil)
	if err != nil {
		return response{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	start := time.Now()
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return response{}, time.Since(start), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, time.Since(start), err
}

// stallWant checks one answer during the stall: status and code, within
// stallBound.
func stallWant(r response, d time.Duration, err error, status int, code string) error {
	switch {
	case err != nil:
		return fmt.Errorf("no answer after %v: %v", d, err)
	case r.Status != status || (code != "" && r.code() != code):
		return fmt.Errorf("status %d %s after %v, want %d %s: %s", r.Status, r.code(), d, status, code, r.Body)
	case d > stallBound:
		return fmt.Errorf("answered %d after %v, want within %v", r.Status, d, stallBound)
	}
	return nil
}

// TestStoreTimeoutStalledPostgres stalls the path to Postgres: uncached
// keys get 503 AUTH_UNAVAILABLE within store_timeout, for every waiter of
// one shared load and for waiters whose client leaves; a known key past
// its L1 TTL whose L2 copy is gone is served stale; a cached key keeps its
// normal latency; the admin API answers 504. Once Postgres answers again,
// new keys are admitted and the listener delivers changes again.
func TestStoreTimeoutStalledPostgres(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	gid := storetest.SeedGroup(t, pool, "stall", 0)
	freshID, fresh := storetest.SeedKey(t, pool, uid, &gid)
	_, stale := storetest.SeedKey(t, pool, uid, &gid)
	_, single := storetest.SeedKey(t, pool, uid, &gid)
	_, shared := storetest.SeedKey(t, pool, uid, &gid)
	_, gone := storetest.SeedKey(t, pool, uid, &gid)
	_, after := storetest.SeedKey(t, pool, uid, &gid)
	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Prefix: prefix, Upstream: up.URL,
		Global: "store_timeout " + stallStoreTimeout.String(),
		Cache:  "l1_ttl 1s\njitter 0%\nstale_if_error 1m"})
	ctx := context.Background()
	snap := pgRedisNS(t, prefix, pool) + "snap:"
	kfWaitFilter(t, c)

	// The listener is up: a status change in SQL reaches the cached key
	// (its L2 copy outlives the test, so only a notification can).
	admExpect(t, c, fresh, 200, "")
	setStatus := func(t *testing.T, status string) {
		t.Helper()
		storetest.Exec(t, pool, `update rpm_api_keys set status = $1 where id = $2`, status, freshID)
	}
	flip := func(t *testing.T, what string, within time.Duration, status int, code string) time.Duration {
		t.Helper()
		start := time.Now()
		var last response
		for time.Since(start) < within {
			r, _, err := stallGet(c, fresh, 5*time.Second)
			if err == nil && r.Status == status && (code == "" || r.code() == code) {
				return time.Since(start)
			}
			last = r
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: still %d %s after %v, want %d %s; log tail:\n%s",
			what, last.Status, last.code(), within, status, code, admTail(c, 30))
		return 0
	}
	notified := func() float64 {
		return c.metric(t, "caddy_rpm_invalidations_total", `origin="postgres"`)
	}
	before := notified()
	setStatus(t, "disabled")
	flip(t, "before the stall: disable", 5*time.Second, 401, "API_KEY_DISABLED")
	setStatus(t, "active")
	flip(t, "before the stall: enable", 5*time.Second, 200, "")
	// The key is cached in L1 and L2 once both notifications are applied
	// (one applied late would drop the copies a request just made).
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := notified(); n < before+2 {
			return fmt.Errorf("%v of 2 notifications applied", n-before)
		}
		return nil
	})
	admExpect(t, c, fresh, 200, "")
	if n, err := rdb.Exists(ctx, snap+store.HashKey(fresh)).Result(); err != nil || n != 1 {
		t.Fatalf("the cached key has no L2 copy before the stall: %v, %v", n, err)
	}

	admExpect(t, c, stale, 200, "")
	warmed := time.Now()
	if err := rdb.Del(ctx, snap+store.HashKey(stale)).Err(); err != nil {
		t.Fatal(err)
	}

	// (c) The cached key is asked all along; L1 and L2 answer it.
	type sample struct {
		status int
		d      time.Duration
		err    error
	}
	var (
		hammerMu sync.Mutex
		samples  []sample
	)
	stopHammer := make(chan struct{})
	hammerDone := make(chan struct{})
	go func() {
		defer close(hammerDone)
		for {
			select {
			case <-stopHammer:
				return
			case <-time.After(50 * time.Millisecond):
			}
			r, d, err := stallGet(c, fresh, 5*time.Second)
			hammerMu.Lock()
			samples = append(samples, sample{r.Status, d, err})
			hammerMu.Unlock()
		}
	}()

	pg.Stall()
	stalled := time.Now()

	// The admin API gives up within its 10 s bound; asked at once, checked
	// before Postgres answers again.
	type adminResult struct {
		r   response
		d   time.Duration
		err error
	}
	adminCall := func(method, path string) chan adminResult {
		done := make(chan adminResult, 1)
		go func() {
			start := time.Now()
			req, err := http.NewRequest(method, c.AdminURL+path, nil)
			if err != nil {
				done <- adminResult{err: err}
				return
			}
			resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
			if err != nil {
				done <- adminResult{d: time.Since(start), err: err}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			done <- adminResult{r: response{Status: resp.StatusCode, Body: string(b)}, d: time.Since(start)}
		}()
		return done
	}
	adminRead := adminCall(http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status")
	adminClear := adminCall(http.MethodDelete, "/admin/groups/"+testutil.Itoa(gid)+"/rpm-overrides")

	t.Run("uncached key", func(t *testing.T) {
		r, d, err := stallGet(c, single, 5*time.Second)
		if err := stallWant(r, d, err, 503, "AUTH_UNAVAILABLE"); err != nil {
			t.Fatal(err)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		// An unknown key is refused by the key filter, without the store.
		r, d, err = stallGet(c, kfRandomKey(t), 5*time.Second)
		if err := stallWant(r, d, err, 401, "INVALID_API_KEY"); err != nil {
			t.Fatalf("unknown key: %v", err)
		}
	})

	t.Run("waiters of one load", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, d, err := stallGet(c, shared, 5*time.Second)
				if err := stallWant(r, d, err, 503, "AUTH_UNAVAILABLE"); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("waiter of a shared load: %v", err)
		}
	})

	// Clients that leave: their waiters end too (each is counted as a
	// client gone at authentication) instead of staying parked behind the
	// load.
	t.Run("clients that leave", func(t *testing.T) {
		refused := func() float64 {
			return c.metric(t, "caddy_rpm_decisions_total", `result="client_gone"`, `reason="auth"`)
		}
		before := refused()
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, d, err := stallGet(c, gone, 100*time.Millisecond); err == nil {
					t.Errorf("a request for an uncached key was answered %d after %v while Postgres is stalled", r.Status, d)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		left := time.Now()
		testutil.WaitFor(t, stallBound, func() error {
			if n := refused(); n < before+5 {
				return fmt.Errorf("%v of 5 waiters whose clients left have ended", n-before)
			}
			return nil
		})
		t.Logf("the waiters of 5 clients that left ended within %v", time.Since(left))
	})

	t.Run("stale key", func(t *testing.T) {
		if wait := time.Second + 100*time.Millisecond - time.Since(warmed); wait > 0 {
			time.Sleep(wait) // past l1_ttl
		}
		staleBefore := c.metric(t, "caddy_rpm_stale_served_total")
		for i := range 3 {
			r, d, err := stallGet(c, stale, 5*time.Second)
			if err := stallWant(r, d, err, 200, ""); err != nil {
				t.Fatalf("known key past its L1 TTL without L2 copy (%d): %v", i, err)
			}
		}
		if n := c.metric(t, "caddy_rpm_stale_served_total"); n < staleBefore+3 {
			t.Fatalf("stale_served_total %v -> %v, want +3", staleBefore, n)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		for name, done := range map[string]chan adminResult{"rpm-status": adminRead, "clear all": adminClear} {
			ar := <-done
			if ar.err != nil {
				t.Errorf("%s while Postgres is stalled: no answer after %v: %v", name, ar.d, ar.err)
				continue
			}
			if ar.r.Status != http.StatusGatewayTimeout || !strings.Contains(ar.r.Body, "did not answer in time") {
				t.Errorf("%s while Postgres is stalled: %d %s after %v, want 504", name, ar.r.Status, ar.r.Body, ar.d)
			}
			if ar.d > 11*time.Second {
				t.Errorf("%s answered after %v, want within its 10s bound", name, ar.d)
			}
		}
	})

	t.Run("cached key", func(t *testing.T) {
		close(stopHammer)
		<-hammerDone
		var slowest time.Duration
		for _, s := range samples {
			if s.err != nil || s.status != 200 {
				t.Fatalf("cached key while Postgres is stalled: %d after %v: %v", s.status, s.d, s.err)
			}
			slowest = max(slowest, s.d)
		}
		if len(samples) < 20 || slowest >= 400*time.Millisecond {
			t.Fatalf("cached key: %d answers, slowest %v; want many, each well below store_timeout", len(samples), slowest)
		}
		t.Logf("cached key: %d answers during the stall, slowest %v", len(samples), slowest)
	})

	// Postgres answers again: new keys are admitted, and the listener is
	// back (a change made in SQL reaches the cached key).
	t.Logf("Postgres stalled for %v", time.Since(stalled))
	pg.Unstall()
	back := time.Now()
	t.Run("recovery", func(t *testing.T) {
		// Connects begun during the stall have given up by now (their
		// timeout is 5s), so the pool has room for new connections.
		testutil.WaitFor(t, 5*time.Second, func() error {
			r, _, err := stallGet(c, after, 5*time.Second)
			if err != nil {
				return err
			}
			if r.Status != 200 {
				return &authErr{r}
			}
			return nil
		})
		t.Logf("new keys admitted %v after Postgres answered again", time.Since(back))
		setStatus(t, "disabled")
		flip(t, "after the stall: disable", 10*time.Second, 401, "API_KEY_DISABLED")
		t.Logf("a change in SQL took effect %v after Postgres answered again", time.Since(back))
		setStatus(t, "active")
		if d := flip(t, "after the stall: enable", 5*time.Second, 200, ""); d > time.Second {
			t.Errorf("a change in SQL after the listener's return took %v", d)
		}
		if !strings.Contains(c.Logs(), "listening for invalidations again") {
			t.Errorf("the listener did not log its return")
		}
	})
}
