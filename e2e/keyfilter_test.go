package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// The key filter: every instance holds a Bloom filter of the valid keys'
// hashes, so a well-formed key that no store holds is refused with neither
// a query nor a Redis write.

// kfRandomKey returns a well-formed key (the shape `caddy rpm key create`
// prints) that no store holds.
func kfRandomKey(t testing.TB) string {
	t.Helper()
	k, err := store.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Raw
}

// kfRedisKeys counts the Redis keys under prefix.
func kfRedisKeys(t testing.TB, rdb *redis.Client, prefix string) int {
	t.Helper()
	keys, err := redistest.ScanKeys(context.Background(), rdb, prefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// kfWaitFilter waits until c refuses an unknown key without a store load,
// i.e. until its key filter has been built.
func kfWaitFilter(t testing.TB, c *caddyInstance) {
	t.Helper()
	kfWaitFilterAt(t, c, "/v1/x")
}

// kfWaitFilterAt is kfWaitFilter with requests to path, which must reach an
// rpm handler with the openai error format.
func kfWaitFilterAt(t testing.TB, c *caddyInstance, path string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		before := cacheLoads(t, c)
		r := c.get(t, path, kfRandomKey(t))
		if r.Status != http.StatusUnauthorized || r.code() != "INVALID_API_KEY" {
			return fmt.Errorf("unknown key: %d %s", r.Status, r.Body)
		}
		if cacheLoads(t, c) != before {
			return errors.New("an unknown key still costs a store load")
		}
		return nil
	})
}

// kfKeyEvents is how many key notifications c has applied. The filter
// takes a notification's key before this count moves.
func kfKeyEvents(t testing.TB, c *caddyInstance) float64 {
	t.Helper()
	return c.metric(t, "caddy_rpm_invalidations_total", `scope="key"`, `origin="postgres"`)
}

// kfWaitKeyEvents waits until c has applied more than before key
// notifications.
func kfWaitKeyEvents(t testing.TB, c *caddyInstance, before float64) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := kfKeyEvents(t, c); n <= before {
			return fmt.Errorf("instance %s: %v key notifications applied, want more than %v", c.URL, n, before)
		}
		return nil
	})
}

// kfWaitBuilt waits until c's key filter has been built once. Builds start
// only once the invalidation listener listens, so from then on every key
// created reaches c by its notification.
func kfWaitBuilt(t testing.TB, c *caddyInstance) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := c.metric(t, "caddy_rpm_key_filter_builds_total", `result="ok"`); n < 1 {
			return fmt.Errorf("instance %s: key filter not built", c.URL)
		}
		return nil
	})
}

// kfSeedKey is storetest.SeedKey for a key used at once through the
// instances cs, which must have built their key filters (kfWaitBuilt): a
// new key is admitted by an instance only once the instance has received
// its notification, a few milliseconds after the commit, so this waits for
// that. (Without the wait a request sent right after the insert loses that
// race about one time in three on a busy machine.)
func kfSeedKey(t testing.TB, pool *pgxpool.Pool, userID int64, groupID *int64, cs ...*caddyInstance) (int64, string) {
	t.Helper()
	before := make([]float64, len(cs))
	for i, c := range cs {
		before[i] = kfKeyEvents(t, c)
	}
	id, raw := storetest.SeedKey(t, pool, userID, groupID)
	for i, c := range cs {
		kfWaitKeyEvents(t, c, before[i])
	}
	return id, raw
}

// TestKeyFilterRandomKeys sends 1000 random well-formed keys through one
// Caddy on Postgres and Redis: each is refused as INVALID_API_KEY at once,
// with at most 25 store loads (Caddy's count and Postgres's own scan count)
// and no new Redis key in all; a real key keeps working.
func TestKeyFilterRandomKeys(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	_, real := storetest.SeedKey(t, pool, uid, nil)
	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Prefix: prefix, Upstream: up.URL, Cache: "l1_ttl 5m"})
	if r := c.get(t, "/v1/x", real); r.Status != 200 {
		t.Fatalf("real key: %d %s", r.Status, r.Body)
	}
	kfWaitFilter(t, c)

	time.Sleep(cacheStatsFlush) // Postgres publishes scan counts late
	scans := cacheScans(t, pool)
	loads := cacheLoads(t, c)
	redisKeys := kfRedisKeys(t, rdb, prefix)
	rejections := c.metric(t, "caddy_rpm_key_filter_rejections_total")
	sent := pg.Sent()

	const n = 1000
	jobs := make(chan string)
	errs := make(chan string, n)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				req, _ := http.NewRequest(http.MethodGet, c.URL+"/v1/x", nil)
				req.Header.Set("Authorization", "Bearer "+k)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"INVALID_API_KEY"`) {
					errs <- fmt.Sprintf("status %d: %s", resp.StatusCode, b)
				}
			}
		}()
	}
	for range n {
		jobs <- kfRandomKey(t)
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("a random key was not refused as INVALID_API_KEY: %s", e)
	}

	if d := cacheLoads(t, c) - loads; d > 25 {
		t.Errorf("%d random keys caused %d store loads, want at most 25", n, d)
	}
	if d := kfRedisKeys(t, rdb, prefix) - redisKeys; d != 0 {
		t.Errorf("%d random keys left %d new Redis keys under %s, want 0", n, d, prefix)
	}
	if d := c.metric(t, "caddy_rpm_key_filter_rejections_total") - rejections; d < n-25 {
		t.Errorf("key_filter_rejections_total rose by %v for %d random keys", d, n)
	}
	t.Logf("%d bytes went to Postgres during %d random keys", pg.Sent()-sent, n)
	if r := c.get(t, "/v1/x", real); r.Status != 200 {
		t.Fatalf("real key after the random ones: %d %s", r.Status, r.Body)
	}
	time.Sleep(cacheStatsFlush)
	if d := cacheScans(t, pool) - scans; d > 25 {
		t.Errorf("Postgres counted %d scans of rpm_api_keys during %d random keys, want at most 25", d, n)
	}
}

// TestKeyFilterNewKeysEverywhere runs two Caddys on one schema and Redis
// prefix. A key inserted with plain SQL is admitted by both within 1 s —
// also when one statement inserts more keys than the triggers list (the
// notification is then "all", and the filters are rebuilt); a key disabled
// or deleted with SQL is refused again; an unknown key leaves nothing in
// Redis.
func TestKeyFilterNewKeysEverywhere(t *testing.T) {
	e := admSetup(t)
	uid := storetest.SeedUser(t, e.pool, 0)
	cs := []*caddyInstance{e.start(t, ""), e.start(t, "")}
	for _, c := range cs {
		kfWaitFilter(t, c)
	}
	ctx := context.Background()
	snap := pgRedisNS(t, e.prefix, e.pool) + "snap:"

	raw := kfRandomKey(t)
	hash := sha256.Sum256([]byte(raw))
	for i, c := range cs {
		r := c.get(t, "/v1/models", raw)
		authCheckError(t, r, "openai", 401, "INVALID_API_KEY")
		if n := e.rdb.Exists(ctx, snap+store.HashKey(raw)).Val(); n != 0 {
			t.Fatalf("instance %d wrote an entry for an unknown key to Redis", i+1)
		}
	}

	// expect polls every instance until it answers status (and code), and
	// fails if one takes 1 s or more.
	expect := func(what, key string, start time.Time, status int, code string) {
		t.Helper()
		for i, c := range cs {
			for {
				r := c.get(t, "/v1/models", key)
				if r.Status == status && (code == "" || r.code() == code) {
					break
				}
				if time.Since(start) > propWithin {
					t.Fatalf("%s: instance %d still answers %d %s after %v, want %d %s",
						what, i+1, r.Status, r.code(), time.Since(start), status, code)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("%s: instance %d answered %d after %v", what, i+1, status, time.Since(start))
		}
	}

	start := time.Now()
	var kid int64
	if err := e.pool.QueryRow(ctx, `insert into rpm_api_keys (key_hash, user_id) values ($1, $2) returning id`,
		hash[:], uid).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	expect("SQL insert", raw, start, 200, "")

	// 70 keys in one statement: more than the triggers name one by one.
	var bulk []string
	var hashes [][]byte
	for range 70 {
		k := kfRandomKey(t)
		h := sha256.Sum256([]byte(k))
		bulk = append(bulk, k)
		hashes = append(hashes, h[:])
	}
	start = time.Now()
	storetest.Exec(t, e.pool, `insert into rpm_api_keys (key_hash, user_id) select h, $2 from unnest($1::bytea[]) h`, hashes, uid)
	expect("SQL insert of 70 keys", bulk[len(bulk)-1], start, 200, "")
	expect("SQL insert of 70 keys", bulk[0], start, 200, "")

	start = time.Now()
	storetest.Exec(t, e.pool, `update rpm_api_keys set status = 'disabled' where id = $1`, kid)
	expect("SQL disable", raw, start, 401, "API_KEY_DISABLED")

	start = time.Now()
	storetest.Exec(t, e.pool, `delete from rpm_api_keys where id = $1`, kid)
	expect("SQL delete", raw, start, 401, "INVALID_API_KEY")
	if n := e.rdb.Exists(ctx, snap+store.HashKey(raw)).Val(); n != 0 {
		t.Fatal("the deleted key's negative entry went to Redis")
	}
}

// TestKeyFilterNotBuiltRefusesNothing starts Caddy while Postgres is
// unreachable (without Redis: with Redis the start needs the store's
// identity): without a filter, no key is refused as unknown (all get 503
// AUTH_UNAVAILABLE, as the store cannot be asked); once Postgres is back the
// filter is built, real keys pass and unknown ones are refused without a
// store load.
func TestKeyFilterNotBuiltRefusesNothing(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	_, real := storetest.SeedKey(t, pool, uid, nil)
	up := newUpstream(t)
	pg.Block()
	c := startCaddy(t, params{DSN: viaPG, Prefix: "rpmtest:", Upstream: up.URL, Redis: "off"})
	for _, k := range []string{real, kfRandomKey(t)} {
		authCheckError(t, c.get(t, "/v1/x", k), "openai", 503, "AUTH_UNAVAILABLE")
	}
	if n := c.metric(t, "caddy_rpm_key_filter_rejections_total"); n != 0 {
		t.Fatalf("the filter refused %v keys before its first build", n)
	}
	pg.Unblock()
	c.waitAdmits(t, 15*time.Second, "/v1/x", real)
	kfWaitFilter(t, c)
}

// TestKeyFilterRebuiltAfterListenerGap creates a key while the instance
// cannot reach Postgres, so its notification is lost: once the listener is
// back, the filter is rebuilt and the key is admitted.
func TestKeyFilterRebuiltAfterListenerGap(t *testing.T) {
	pool, pg, viaPG := proxiedSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{DSN: viaPG, Prefix: prefix, Upstream: up.URL})
	kfWaitFilter(t, c)
	builds := c.metric(t, "caddy_rpm_key_filter_builds_total", `result="ok"`)

	pg.Block()
	_, key := storetest.SeedKey(t, pool, uid, nil) // straight to Postgres: the instance hears nothing
	pg.Unblock()
	c.waitAdmits(t, 15*time.Second, "/v1/x", key)
	if n := c.metric(t, "caddy_rpm_key_filter_builds_total", `result="ok"`); n <= builds {
		t.Fatalf("no rebuild after the listener gap (%v builds, had %v)", n, builds)
	}
}
