package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestOutagePostgres cuts Postgres off behind a proxy: a cached key keeps
// working, also past its L1 TTL within stale_if_error; an uncached key gets
// 503 AUTH_UNAVAILABLE, never 401, while a key outside the key filter is
// still 401. There is no Redis, so L2 cannot answer.
func TestOutagePostgres(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	gid := storetest.SeedGroup(t, pool, "outage", 0)
	_, cached := storetest.SeedKey(t, pool, uid, &gid)
	_, uncached := storetest.SeedKey(t, pool, uid, &gid)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Redis: "off", Upstream: up.URL,
		Cache: "l1_ttl 1s\nstale_if_error 1m"})

	if r := c.get(t, "/v1/x", cached); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	kfWaitFilter(t, c)
	pg.Block()
	if r := c.get(t, "/v1/x", cached); r.Status != 200 {
		t.Fatalf("cached key during outage: %d %s", r.Status, r.Body)
	}
	time.Sleep(1500 * time.Millisecond) // past l1_ttl (1s + 10% jitter)
	for i := range 3 {
		start := time.Now()
		r := c.get(t, "/v1/x", cached)
		if r.Status != 200 {
			t.Fatalf("stale cached key during outage (%d): %d %s", i, r.Status, r.Body)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("stale answer took %v", d)
		}
	}
	if n := c.metric(t, "caddy_rpm_stale_served_total"); n < 1 {
		t.Fatalf("stale_served_total = %v, want >= 1", n)
	}
	r := c.get(t, "/v1/x", uncached)
	authCheckError(t, r, "openai", 503, "AUTH_UNAVAILABLE")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("uncached key: 503 without Retry-After")
	}
	// The key filter, built before the outage, knows this key is unknown.
	authCheckError(t, c.get(t, "/v1/x", "sk-unknown-"+randomID()), "openai", 401, "INVALID_API_KEY")
	if n := c.metric(t, "caddy_rpm_store_errors_total"); n < 1 {
		t.Fatalf("store_errors_total = %v, want >= 1", n)
	}
	pg.Unblock()
	c.waitAdmits(t, 15*time.Second, "/v1/x", uncached)
	if strings.Contains(c.Logs(), "panic") {
		t.Fatalf("panic in logs:\n%s", c.Logs())
	}
}

// TestOutageRedis takes a private Redis away, first frozen (SIGSTOP, so
// calls hang until redis_timeout) and then stopped: authentication still
// works from L1 and Postgres, no request waits long, and limits fail open.
func TestOutageRedis(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 2) // 2 rpm: the 3rd request would be refused
	gid := storetest.SeedGroup(t, pool, "redis-outage", 0)
	_, warm := storetest.SeedKey(t, pool, uid, &gid)
	_, cold1 := storetest.SeedKey(t, pool, uid, &gid)
	_, cold2 := storetest.SeedKey(t, pool, uid, &gid)
	srv := redistest.StartServer(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: dsn, Redis: "redis://" + srv.Addr, Prefix: redistest.Prefix(t), Upstream: up.URL,
		Global: "redis_timeout 100ms"})

	if r := c.get(t, "/v1/x", warm); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	timed := func(phase, key string, want int, code string) {
		t.Helper()
		start := time.Now()
		r := c.get(t, "/v1/x", key)
		d := time.Since(start)
		if r.Status != want {
			t.Fatalf("%s: status %d, want %d: %s", phase, r.Status, want, r.Body)
		}
		if code != "" {
			authCheckError(t, r, "openai", want, code)
		}
		if d > 900*time.Millisecond {
			t.Fatalf("%s: request took %v with Redis down", phase, d)
		}
	}
	for _, phase := range []string{"paused", "stopped"} {
		if phase == "paused" {
			srv.Pause()
		} else {
			srv.Resume()
			srv.Stop()
		}
		// 5 requests > the user's limit of 2: admitted (fail open).
		for range 5 {
			timed(phase+": cached key", warm, 200, "")
		}
		cold := cold1
		if phase == "stopped" {
			cold = cold2
		}
		timed(phase+": uncached key from Postgres", cold, 200, "")
		timed(phase+": unknown key", "sk-unknown-"+randomID(), 401, "INVALID_API_KEY")
	}
	if n := c.metric(t, "caddy_rpm_fail_open_total"); n < 1 {
		t.Fatalf("fail_open_total = %v, want >= 1", n)
	}
	if c.metrics(t)["caddy_rpm_redis_errors_total"] == nil {
		t.Fatal("no redis_errors metric")
	}
	if n := c.metric(t, "caddy_rpm_redis_errors_total"); n < 1 {
		t.Fatalf("redis_errors_total = %v, want >= 1", n)
	}
}
