package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func cacheLoads(t testing.TB, c *caddyInstance) int {
	t.Helper()
	return int(c.metric(t, "caddy_rpm_store_loads_total"))
}

// TestCacheL2WrongVersionNeverServed plants, before any request, an L2 entry
// of version 6 saying the key is disabled, and an entry that does not
// decode: both are misses, reloaded from the store and overwritten.
func TestCacheL2WrongVersionNeverServed(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	gid := storetest.SeedGroup(t, pool, "l2", 0)
	kid6, k6 := storetest.SeedKey(t, pool, uid, &gid)
	_, kBad := storetest.SeedKey(t, pool, uid, &gid)
	_, kNeg := storetest.SeedKey(t, pool, uid, &gid)
	rdb, prefix := redistest.Shared(t)
	snap := pgRedisNS(t, prefix, pool) + "snap:"
	ctx := context.Background()

	v6 := fmt.Sprintf(`{"version":6,"api_key_id":%d,"user_id":%d,"group_id":%d,"status":"disabled",`+
		`"user":{"id":%d,"status":"active","rpm_limit":0},"group":{"id":%d,"name":"l2","status":"active","rpm_limit":0}}`,
		kid6, uid, gid, uid, gid)
	plant := map[string]string{
		k6:   v6,
		kBad: `{"version":7,"status":`, // truncated
		// A v6 negative entry must not turn a valid key into 401 either.
		kNeg: `{"version":6,"not_found":true}`,
	}
	for k, v := range plant {
		if err := rdb.Set(ctx, snap+store.HashKey(k), v, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL, Cache: "l1_ttl 1m"})

	for k := range plant {
		if r := c.get(t, "/v1/x", k); r.Status != 200 {
			t.Fatalf("planted entry was served: %d %s", r.Status, r.Body)
		}
	}
	if n := cacheLoads(t, c); n != len(plant) {
		t.Fatalf("store loads = %d, want %d", n, len(plant))
	}
	for k := range plant {
		b, err := rdb.Get(ctx, snap+store.HashKey(k)).Bytes()
		if err != nil {
			t.Fatalf("L2 entry after reload: %v", err)
		}
		var s struct {
			Version  int    `json:"version"`
			Status   string `json:"status"`
			NotFound bool   `json:"not_found"`
		}
		if err := json.Unmarshal(b, &s); err != nil || s.Version != 7 || s.Status != "active" || s.NotFound {
			t.Fatalf("L2 entry not overwritten with version 7: %s (%v)", b, err)
		}
		ttl := rdb.PTTL(ctx, snap+store.HashKey(k)).Val()
		if ttl <= 0 || ttl > 6*time.Minute {
			t.Fatalf("L2 ttl = %v, want about l2_ttl (5m)", ttl)
		}
	}
}

// TestCacheNegativeEntry checks that a key the filter lets through but the
// store does not hold — one deleted since the filter was built — answers
// 401 from a negative entry in L1, without store loads, until negative_ttl
// passes; the negative entry never goes to Redis. The requests must come
// in the first half of negative_ttl: a read in the second half reloads the
// entry ahead of its end, in the background, as any L1 entry.
func TestCacheNegativeEntry(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	kid, deleted := storetest.SeedKey(t, pool, uid, nil)
	rdb, prefix := redistest.Shared(t)
	snap := pgRedisNS(t, prefix, pool) + "snap:"
	up := newUpstream(t)
	const negativeTTL = 6 * time.Second
	c := startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL, Cache: "negative_ttl 6s"})
	kfWaitFilter(t, c)
	// A Bloom filter cannot forget: the deleted key stays in it until the
	// next rebuild. Wait until the delete's notification is applied, so it
	// cannot drop the negative entry below.
	events := kfKeyEvents(t, c)
	storetest.Exec(t, pool, `delete from rpm_api_keys where id = $1`, kid)
	kfWaitKeyEvents(t, c, events)
	loads := cacheLoads(t, c)

	start := time.Now()
	for range 20 {
		r := c.get(t, "/v1/x", deleted)
		authCheckError(t, r, "openai", 401, "INVALID_API_KEY")
	}
	if n := rdb.Exists(context.Background(), snap+store.HashKey(deleted)).Val(); n != 0 {
		t.Fatalf("a negative entry went to Redis (ttl %v)", rdb.PTTL(context.Background(), snap+store.HashKey(deleted)).Val())
	}
	// The earliest reload ahead: half of negative_ttl less the 10 % jitter.
	if time.Since(start) > negativeTTL*9/20 {
		t.Skip("machine too slow to stay inside the first half of negative_ttl")
	}
	if n := cacheLoads(t, c) - loads; n != 1 {
		t.Fatalf("store loads within negative_ttl = %d, want 1", n)
	}
	time.Sleep(time.Until(start.Add(negativeTTL*11/10 + 300*time.Millisecond))) // negative_ttl + max jitter
	authCheckError(t, c.get(t, "/v1/x", deleted), "openai", 401, "INVALID_API_KEY")
	if n := cacheLoads(t, c) - loads; n != 2 {
		t.Fatalf("store loads after negative_ttl = %d, want 2", n)
	}
}

// cacheScans sums the sequential and index scans of the schema's rpm_api_keys
// table as Postgres counts them. Every snapshot load scans it.
func cacheScans(t testing.TB, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// Read fresh counters, not the transaction's cached stats snapshot.
	if _, err := conn.Exec(ctx, "select pg_stat_clear_snapshot()"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `select coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint
from pg_stat_user_tables where schemaname = current_schema() and relname = 'rpm_api_keys'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// cacheStatsFlush is how long Postgres may keep a backend's statistics
// before publishing them (PGSTAT_IDLE_INTERVAL is 10s) plus margin.
const cacheStatsFlush = 12 * time.Second

// TestCacheSteadyStateNoStoreQueries proves the core promise: once a key's
// snapshot is cached, requests never reach Postgres, for a user with a
// per-group override and for one without.
func TestCacheSteadyStateNoStoreQueries(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	gid := storetest.SeedGroup(t, pool, "steady", 0)
	withOverride := storetest.SeedUser(t, pool, 0)
	storetest.SeedOverride(t, pool, withOverride, gid, 100000)
	without := storetest.SeedUser(t, pool, 0)
	_, kWith := storetest.SeedKey(t, pool, withOverride, &gid)
	_, kWithout := storetest.SeedKey(t, pool, without, &gid)
	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Prefix: prefix, Upstream: up.URL, Cache: "l1_ttl 5m"})

	// Postgres publishes a backend's statistics up to ~10s late, so each
	// reading waits for the counters to settle.
	time.Sleep(cacheStatsFlush)
	before := cacheScans(t, pool)
	for _, k := range []string{kWith, kWithout} {
		if r := c.get(t, "/v1/x", k); r.Status != 200 {
			t.Fatalf("warm-up: %d %s", r.Status, r.Body)
		}
	}
	if n := cacheLoads(t, c); n != 2 {
		t.Fatalf("warm-up store loads = %d, want 2", n)
	}
	time.Sleep(cacheStatsFlush)
	// The Postgres-side count sees the warm-up loads, so it would see more.
	warm := cacheScans(t, pool)
	if warm < before+2 {
		t.Fatalf("Postgres counted %d scans of rpm_api_keys for 2 store loads; the cross-check is blind", warm-before)
	}
	sentBefore := pg.Sent()

	for _, k := range []string{kWith, kWithout} {
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		jobs := make(chan int)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range jobs {
					req, _ := http.NewRequest(http.MethodGet, c.URL+"/v1/x", nil)
					req.Header.Set("Authorization", "Bearer "+k)
					resp, err := client.Do(req)
					if err != nil {
						errs <- err
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("status %d", resp.StatusCode)
					}
				}
			}()
		}
		for i := range 1000 {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("steady-state request: %v", err)
		}
	}
	if n := cacheLoads(t, c); n != 2 {
		m := c.admin(t, http.MethodGet, "/metrics", "")
		t.Fatalf("store loads after 2x1000 cached requests = %d, want 2 (warm-up only); metrics:\n%s", n, m.Body)
	}
	if sent := pg.Sent() - sentBefore; sent != 0 {
		t.Fatalf("%d bytes went to Postgres during 2x1000 cached requests", sent)
	}
	time.Sleep(cacheStatsFlush)
	if after := cacheScans(t, pool); after != warm {
		t.Fatalf("Postgres counted %d scans of rpm_api_keys during 2x1000 cached requests", after-warm)
	}
}

// TestCacheColdKeySingleLoad fires 500 concurrent first requests with one
// cold key: exactly one store load.
func TestCacheColdKeySingleLoad(t *testing.T) {
	key, c := startWithKey(t, params{Cache: "l1_ttl 5m"})

	const n = 500
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	// Open the connections first so the requests start together.
	var warm sync.WaitGroup
	for range n {
		warm.Add(1)
		go func() {
			defer warm.Done()
			if resp, err := hc.Get(c.URL + "/"); err == nil { // no key: 401, no load
				resp.Body.Close()
			}
		}()
	}
	warm.Wait()
	if l := cacheLoads(t, c); l != 0 {
		t.Fatalf("store loads before the burst = %d", l)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodGet, c.URL+"/v1/x", nil)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := hc.Do(req)
			if err != nil {
				statuses <- -1
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Fatalf("a concurrent first request got %d", s)
		}
	}
	if l := cacheLoads(t, c); l != 1 {
		t.Fatalf("500 concurrent first requests caused %d store loads, want 1", l)
	}
	if m := c.metric(t, "caddy_rpm_cache_misses_total", `layer="l1"`); m < 2 {
		t.Logf("only %v L1 misses: the burst did not overlap much", m)
	}
}
