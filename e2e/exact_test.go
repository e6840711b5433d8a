package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// Exactness (spec §6): under any concurrency, across any number of
// instances, exactly `limit` requests are admitted per window.
const (
	exactWorkers   = 50
	exactPerWorker = 20
	exactLimit     = 37
	// exactGlobal gives Redis calls a generous timeout: exactness holds
	// while Redis answers, and on a loaded test machine 1000 concurrent
	// requests can push a call past the default 100ms, which (fail open,
	// by design) admits it uncounted. exactCheck asserts no fail open.
	exactGlobal = "redis_timeout 2s"
)

// exactCheck runs the burst against urls and asserts exactly exactLimit
// admissions, the rest 429, and the counter in Redis at exactLimit.
func exactCheck(t *testing.T, e *limEnv, cs []*caddyInstance, key, counter string) {
	t.Helper()
	var urls []string
	for _, c := range cs {
		urls = append(urls, c.URL+"/v1/x")
	}
	redistest.WaitForWindow(t, e.rdb, 25*time.Second)
	st := limBurst(t, urls, key, exactWorkers, exactPerWorker)
	var failOpens, redisErrors float64
	for _, c := range cs {
		failOpens += c.metric(t, "caddy_rpm_fail_open_total")
		redisErrors += c.metric(t, "caddy_rpm_redis_errors_total")
	}
	if st[http.StatusOK] != exactLimit || st[http.StatusTooManyRequests] != exactWorkers*exactPerWorker-exactLimit || failOpens != 0 {
		t.Fatalf("statuses %v, want %d×200 and %d×429 (fail opens %v, redis errors %v)", st, exactLimit,
			exactWorkers*exactPerWorker-exactLimit, failOpens, redisErrors)
	}
	e.wantCount(t, "limited", counter, exactLimit)
	if n := len(e.up.headers()); n != exactLimit {
		t.Fatalf("upstream saw %d requests, want %d", n, exactLimit)
	}
}

// TestExactSingleInstance: 50 goroutines × 20 requests against a user
// limit of 37 through one Caddy.
func TestExactSingleInstance(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", exactGlobal, "")
	uid, _, key := e.seedGroupedKey(t, exactLimit, 0, noOverride)
	exactCheck(t, e, []*caddyInstance{c}, key, e.keys.User(uid))
}

// TestExactTwoInstances: the same against a group limit of 37 with the
// requests split between two Caddy instances sharing Redis.
func TestExactTwoInstances(t *testing.T) {
	e := newLimEnv(t)
	c1 := e.caddy(t, "", exactGlobal, "")
	c2 := e.caddy(t, "", exactGlobal, "")
	uid, gid, key := e.seedGroupedKey(t, 0, exactLimit, noOverride)
	exactCheck(t, e, []*caddyInstance{c1, c2}, key, e.keys.UserGroup(uid, gid))
}

// TestExactCluster: the same against an override of 37 (plus a user limit
// that does not bind, so two counters are in play) on a real three-node
// Redis Cluster, split between two Caddy instances.
func TestExactCluster(t *testing.T) {
	addrs := redistest.StartCluster(t)
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cl.Close() })
	if err := cl.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	e := newLimEnvOn(t, cl)
	redisArg := strings.Join(addrs, " ")
	c1 := e.caddy(t, redisArg, "redis_cluster\n"+exactGlobal, "")
	c2 := e.caddy(t, redisArg, "redis_cluster\n"+exactGlobal, "")
	uid, gid, key := e.seedGroupedKey(t, 1000, 1, exactLimit)
	exactCheck(t, e, []*caddyInstance{c1, c2}, key, e.keys.UserGroup(uid, gid))
	e.wantCount(t, "user", e.keys.User(uid), exactLimit)
	for _, c := range []*caddyInstance{c1, c2} {
		if strings.Contains(c.Logs(), "CROSSSLOT") {
			t.Fatalf("CROSSSLOT in logs:\n%s", c.Logs())
		}
	}
}
