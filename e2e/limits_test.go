package e2e

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// limEnv is one Postgres schema and one Redis key prefix.
type limEnv struct {
	pool   *pgxpool.Pool
	dsn    string
	prefix string                // key_prefix
	ns     string                // the namespaced prefix of the Redis keys (redisNS)
	rdb    redis.UniversalClient // where the counters live
	keys   limiter.Keys
	up     *upstream
	// instances are the Caddys started by caddy, which seedKey waits for.
	instances []*caddyInstance
}

// newLimEnv creates a schema and a random key prefix on the shared Redis.
func newLimEnv(t testing.TB) *limEnv {
	t.Helper()
	rdb, prefix := redistest.Shared(t)
	return newLimEnvAt(t, rdb, prefix)
}

// newLimEnvOn is newLimEnv with counters on another Redis (a private server
// or a cluster) reached by rdb.
func newLimEnvOn(t testing.TB, rdb redis.UniversalClient) *limEnv {
	t.Helper()
	return newLimEnvAt(t, rdb, redistest.Prefix(t))
}

func newLimEnvAt(t testing.TB, rdb redis.UniversalClient, prefix string) *limEnv {
	t.Helper()
	pool, dsn := storetest.NewSchema(t)
	ns := pgRedisNS(t, prefix, pool)
	return &limEnv{pool: pool, dsn: dsn, prefix: prefix, ns: ns, rdb: rdb,
		keys: limiter.Keys{Prefix: ns + "c:"}, up: newUpstream(t)}
}

// caddy starts a Caddy on this env: Postgres, Redis with the env's key
// prefix, a long L1 TTL (so steady-state requests never touch Redis for
// their snapshot), global lines in the rpm app block and the site body
// (default: the rpm handler in front of the upstream). redisAddrs ""
// means the shared Redis.
func (e *limEnv) caddy(t testing.TB, redisAddrs, global, site string) *caddyInstance {
	t.Helper()
	c := startCaddy(t, params{DSN: e.dsn, Prefix: e.prefix, Upstream: e.up.URL, Redis: redisAddrs,
		Cache: "l1_ttl 10m", Global: global, Site: site})
	kfWaitBuilt(t, c)
	e.instances = append(e.instances, c)
	return c
}

// seedKey is storetest.SeedKey that returns once every instance of e has
// the new key in its key filter (see kfSeedKey).
func (e *limEnv) seedKey(t testing.TB, userID int64, groupID *int64) (int64, string) {
	t.Helper()
	return kfSeedKey(t, e.pool, userID, groupID, e.instances...)
}

// noOverride tells seedGroupedKey to seed no (user, group) override.
const noOverride = -1

// seedGroupedKey seeds a user with rpm limit user, a new group with rpm
// limit group, the user's override in it unless override is noOverride,
// and a key of the user in the group (see seedKey).
func (e *limEnv) seedGroupedKey(t testing.TB, user, group, override int64) (uid, gid int64, key string) {
	t.Helper()
	uid = storetest.SeedUser(t, e.pool, user)
	gid = storetest.SeedGroup(t, e.pool, "", group)
	if override != noOverride {
		storetest.SeedOverride(t, e.pool, uid, gid, override)
	}
	_, key = e.seedKey(t, uid, &gid)
	return uid, gid, key
}

// count reads a counter's current-window count the way the limiter does,
// and whether the counter exists (has a field in its bucket).
func (e *limEnv) count(t testing.TB, key string) (int64, bool) {
	t.Helper()
	ctx := context.Background()
	n, err := limiter.NewRedis(e.rdb).Count(ctx, key)
	if err != nil {
		t.Fatalf("count %s: %v", key, err)
	}
	hash, field := e.place(key)
	ex, err := e.rdb.HExists(ctx, hash, field).Result()
	if err != nil {
		t.Fatalf("hexists %s: %v", key, err)
	}
	return n, ex
}

// wantCount asserts a counter's current-window count (0 also when absent).
// With reservations (the default) Redis also counts units an instance
// reserved and has not used yet; they come back once the instance has had
// no request for the counter set for reservation_ttl, so the count is
// awaited for up to a second. A count that stays off fails all the same.
func (e *limEnv) wantCount(t testing.TB, what, key string, want int64) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		n, _ := e.count(t, key)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s counter = %d, want %d", what, n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantNoKey asserts a counter key does not exist at all.
func (e *limEnv) wantNoKey(t testing.TB, what, key string) {
	t.Helper()
	if _, ok := e.count(t, key); ok {
		t.Fatalf("%s counter %s exists, want none", what, key)
	}
}

// userKeys lists every counter key of a user: the fields of the user's
// bucket under the user's hash tag.
func (e *limEnv) userKeys(t testing.TB, uid int64) []string {
	t.Helper()
	key := e.keys.User(uid)
	hash, field := e.place(key)
	prefix, tag := strings.TrimSuffix(key, field), field[:strings.IndexByte(field, '}')+1]
	fields, err := e.rdb.HKeys(context.Background(), hash).Result()
	if err != nil {
		t.Fatalf("hkeys %s: %v", hash, err)
	}
	var out []string
	for _, f := range fields {
		if limiter.IsCounterField(f) && strings.HasPrefix(f, tag) {
			out = append(out, prefix+f)
		}
	}
	return out
}

// place is limiter.CounterPlace for the counters of e.rdb.
func (e *limEnv) place(key string) (hash, field string) {
	_, cluster := e.rdb.(*redis.ClusterClient)
	return limiter.CounterPlace(key, cluster)
}

// limExpect sends requests with key to path and checks each status; a 429
// must carry wantCode.
func limExpect(t testing.TB, c *caddyInstance, path, key string, statuses []int, wantCode string) []response {
	t.Helper()
	out := make([]response, len(statuses))
	for i, want := range statuses {
		r := c.get(t, path, key)
		if r.Status != want {
			t.Fatalf("request %d to %s: status %d, want %d: %s", i+1, path, r.Status, want, r.Body)
		}
		if want == http.StatusTooManyRequests {
			if code := r.code(); code != wantCode {
				t.Fatalf("request %d: code %q, want %q: %s", i+1, code, wantCode, r.Body)
			}
			if r.Header.Get("Retry-After") == "" {
				t.Fatalf("request %d: 429 without Retry-After", i+1)
			}
		}
		out[i] = r
	}
	return out
}

// limRepeat returns n copies of status.
func limRepeat(status, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = status
	}
	return out
}

// limSeq concatenates status lists.
func limSeq(lists ...[]int) []int {
	var out []int
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// limClient is an HTTP client for concurrent load.
var limClient = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128},
}

// limHit sends one GET with a bearer key and returns the status.
func limHit(url, key string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := limClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf [512]byte
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	return resp.StatusCode, nil
}

// limTally counts the statuses of concurrent requests, and the errors of
// those that got none.
type limTally struct {
	mu       sync.Mutex
	statuses map[int]int
	errs     []error
}

func (c *limTally) add(status int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	if c.statuses == nil {
		c.statuses = map[int]int{}
	}
	c.statuses[status]++
}

// check fails the test if a request got no answer.
func (c *limTally) check(t testing.TB) {
	t.Helper()
	if len(c.errs) > 0 {
		t.Fatalf("%d request errors, first: %v", len(c.errs), c.errs[0])
	}
}

// limBurst runs workers goroutines of perWorker requests each, spreading
// them round-robin over urls, and returns how many got each status.
func limBurst(t testing.TB, urls []string, key string, workers, perWorker int) map[int]int {
	t.Helper()
	var (
		tally limTally
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range perWorker {
				tally.add(limHit(urls[(w*perWorker+i)%len(urls)], key))
			}
		})
	}
	close(start)
	wg.Wait()
	tally.check(t)
	return tally.statuses
}

// TestLimitsTable walks the table of spec §6 through Caddy, reading the
// counters back from Redis after every step.
func TestLimitsTable(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "", "")
	ok, tooMany := http.StatusOK, http.StatusTooManyRequests
	// seed is seedGroupedKey in a fresh window.
	seed := func(t *testing.T, user, group, override int64) (uid, gid int64, key string) {
		t.Helper()
		uid, gid, key = e.seedGroupedKey(t, user, group, override)
		redistest.WaitForWindow(t, e.rdb, 15*time.Second)
		return uid, gid, key
	}

	t.Run("override_below_group_and_user", func(t *testing.T) {
		// override 2 / group 100 / user 100: the third is GROUP_RPM_EXCEEDED.
		uid, gid, key := seed(t, 100, 100, 2)
		limExpect(t, c, "/v1/x", key, []int{ok, ok}, "")
		e.wantCount(t, "user", e.keys.User(uid), 2)
		e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), 2)
		limExpect(t, c, "/v1/x", key, limRepeat(tooMany, 3), "GROUP_RPM_EXCEEDED")
		// Refused requests increment nothing, not even the user counter
		// that still had room.
		e.wantCount(t, "user", e.keys.User(uid), 2)
		e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), 2)
	})

	t.Run("user_below_override", func(t *testing.T) {
		// override 100 / user 2: the third is USER_RPM_EXCEEDED.
		uid, gid, key := seed(t, 2, 1, 100) // the override lifts the group's 1
		limExpect(t, c, "/v1/x", key, limSeq(limRepeat(ok, 2), limRepeat(tooMany, 2)), "USER_RPM_EXCEEDED")
		e.wantCount(t, "user", e.keys.User(uid), 2)
		e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), 2)
	})

	t.Run("override_zero_exempts_group", func(t *testing.T) {
		// override 0 / user 5 (group 1): the sixth is USER_RPM_EXCEEDED
		// and no (user, group) counter exists.
		uid, gid, key := seed(t, 5, 1, 0)
		limExpect(t, c, "/v1/x", key, limSeq(limRepeat(ok, 5), limRepeat(tooMany, 2)), "USER_RPM_EXCEEDED")
		e.wantCount(t, "user", e.keys.User(uid), 5)
		e.wantNoKey(t, "(user, group)", e.keys.UserGroup(uid, gid))
	})

	t.Run("override_zero_user_zero", func(t *testing.T) {
		// override 0 / user 0 (group 1): unlimited; no counter at all.
		// TestCommandsPerRequest proves the zero Redis commands.
		uid, _, key := e.seedGroupedKey(t, 0, 1, 0)
		limExpect(t, c, "/v1/x", key, limRepeat(ok, 50), "")
		if ks := e.userKeys(t, uid); len(ks) != 0 {
			t.Fatalf("counters %v exist for an unlimited user", ks)
		}
	})

	t.Run("group_only", func(t *testing.T) {
		// no override / group 5 / user 0: the sixth is GROUP_RPM_EXCEEDED.
		uid, gid, key := seed(t, 0, 5, noOverride)
		limExpect(t, c, "/v1/x", key, limSeq(limRepeat(ok, 5), limRepeat(tooMany, 2)), "GROUP_RPM_EXCEEDED")
		e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), 5)
		e.wantNoKey(t, "user", e.keys.User(uid))
	})

	t.Run("group_zero_user_limit", func(t *testing.T) {
		// group 0 / user 2: the third is USER_RPM_EXCEEDED, no (user,
		// group) counter.
		uid, gid, key := seed(t, 2, 0, noOverride)
		limExpect(t, c, "/v1/x", key, limSeq(limRepeat(ok, 2), limRepeat(tooMany, 2)), "USER_RPM_EXCEEDED")
		e.wantCount(t, "user", e.keys.User(uid), 2)
		e.wantNoKey(t, "(user, group)", e.keys.UserGroup(uid, gid))
	})

	t.Run("key_without_group", func(t *testing.T) {
		// A key without a group is limited by the user limit alone.
		uid := storetest.SeedUser(t, e.pool, 3)
		_, key := e.seedKey(t, uid, nil)
		redistest.WaitForWindow(t, e.rdb, 15*time.Second)
		limExpect(t, c, "/v1/x", key, limSeq(limRepeat(ok, 3), limRepeat(tooMany, 2)), "USER_RPM_EXCEEDED")
		e.wantCount(t, "user", e.keys.User(uid), 3)
		if ks := e.userKeys(t, uid); len(ks) != 1 || ks[0] != e.keys.User(uid) {
			t.Fatalf("counters of a key without group: %v, want only the user counter", ks)
		}
	})

	// One user, two keys in one group: both keys count toward one (user,
	// group) counter and one user counter, so whichever limit is 3 refuses
	// the fourth request, whatever key sends it.
	for _, tc := range []struct {
		name        string
		user, group int64
		first       int // requests of k1 before k2's
		code        string
	}{
		{"two_keys_share_group_counter", 100, 3, 2, "GROUP_RPM_EXCEEDED"},
		{"two_keys_share_user_counter", 3, 100, 1, "USER_RPM_EXCEEDED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid := storetest.SeedUser(t, e.pool, tc.user)
			gid := storetest.SeedGroup(t, e.pool, "", tc.group)
			_, k1 := e.seedKey(t, uid, &gid)
			_, k2 := e.seedKey(t, uid, &gid)
			redistest.WaitForWindow(t, e.rdb, 15*time.Second)
			limExpect(t, c, "/v1/x", k1, limRepeat(ok, tc.first), "")
			limExpect(t, c, "/v1/x", k2, limSeq(limRepeat(ok, 3-tc.first), []int{tooMany}), tc.code)
			limExpect(t, c, "/v1/x", k1, []int{tooMany}, tc.code)
			e.wantCount(t, "user", e.keys.User(uid), 3)
			e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), 3)
		})
	}
}

// TestLimitsMetrics checks caddy_rpm_decisions_total's labels, that fail
// opens are counted (see TestRedisFailOpen for the outage itself), and
// that no caddy_rpm_ label value names a user, a group or a key.
func TestLimitsMetrics(t *testing.T) {
	e := newLimEnv(t)
	c := e.caddy(t, "", "", "")
	uid := storetest.SeedUser(t, e.pool, 2)
	gid := storetest.SeedGroup(t, e.pool, "metrics-group", 100)
	kid, key := e.seedKey(t, uid, &gid)
	// A late seeding notification would drop the deny-cache entry counted
	// below.
	cmdSettle(t, c)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)

	before := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="ok"`)
	limExpect(t, c, "/v1/x", key, []int{200, 200, 429, 429}, "USER_RPM_EXCEEDED")
	if d := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`, `reason="ok"`) - before; d != 2 {
		t.Errorf("admitted ok decisions += %v, want 2", d)
	}
	// The first refusal asks Redis, the second is answered by the local
	// deny cache.
	if v := c.metric(t, "caddy_rpm_decisions_total", `result="refused"`, `reason="USER_RPM_EXCEEDED"`); v != 1 {
		t.Errorf("refused USER_RPM_EXCEEDED = %v, want 1", v)
	}
	if v := c.metric(t, "caddy_rpm_decisions_total", `result="refused"`, `reason="USER_RPM_EXCEEDED_local"`); v != 1 {
		t.Errorf("refused USER_RPM_EXCEEDED_local = %v, want 1", v)
	}

	forbidden := []string{testutil.Itoa(uid), testutil.Itoa(gid), testutil.Itoa(kid), key, "metrics-group"}
	allowedLabels := map[string]bool{"result": true, "reason": true, "layer": true, "scope": true, "origin": true}
	series := 0
	for name, family := range c.metrics(t) {
		if !strings.HasPrefix(name, "caddy_rpm_") {
			continue
		}
		for _, m := range family.GetMetric() {
			series++
			labels := labelsOf(m)
			if name == "caddy_rpm_decisions_total" {
				// result is a fixed set; reason is a code or fixed word,
				// never anything numeric.
				if r := labels["result"]; r != "admitted" && r != "refused" {
					t.Errorf("result label %q: %s %v", r, name, labels)
				}
				if !limReason.MatchString(labels["reason"]) {
					t.Errorf("reason label %q: %s %v", labels["reason"], name, labels)
				}
			}
			for label, value := range labels {
				if !allowedLabels[label] {
					t.Errorf("unexpected label %s in %s %v", label, name, labels)
				}
				for _, f := range forbidden {
					if value == f || strings.Contains(value, key) {
						t.Errorf("label %s=%q carries an identifier (%q): %s", label, value, f, name)
					}
				}
			}
		}
	}
	if series == 0 {
		t.Fatal("no caddy_rpm_ series in /metrics")
	}
}

var limReason = regexp.MustCompile(`^[A-Za-z_]+$`)
