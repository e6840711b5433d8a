package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestNamespaceStoresApart: two gateways on two schemas of one database
// share one Redis and one key_prefix. Their users of the same id have
// separate counters, a key of one store is never admitted by the other from
// the shared L2, an unknown-key entry of one never refuses a key of the
// other, and a cache flush on one reaches neither the other's L2 nor its
// invalidation channel.
func TestNamespaceStoresApart(t *testing.T) {
	poolA, dsnA := storetest.NewSchema(t)
	poolB, dsnB := storetest.NewSchema(t)
	uidA := storetest.SeedUser(t, poolA, 5)
	uidB := storetest.SeedUser(t, poolB, 100)
	if uidA != uidB {
		t.Fatalf("user ids %d and %d: the test needs the same id in both stores", uidA, uidB)
	}
	_, keyA := storetest.SeedKey(t, poolA, uidA, nil)
	_, onlyA := storetest.SeedKey(t, poolA, uidA, nil)
	_, onlyALookedUpOnB := storetest.SeedKey(t, poolA, uidA, nil)
	_, keyB := storetest.SeedKey(t, poolB, uidB, nil)

	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	start := func(dsn string) *caddyInstance {
		return startCaddy(t, params{DSN: dsn, Prefix: prefix, Upstream: up.URL,
			Cache: "l1_ttl 10m", Global: "redis_timeout 2s"})
	}
	a, b := start(dsnA), start(dsnB)

	// Each instance names its namespace at start, and it is the one the
	// tests compute.
	nsA, nsB := pgRedisNS(t, prefix, poolA), pgRedisNS(t, prefix, poolB)
	if nsA == nsB {
		t.Fatalf("both schemas have namespace %s", nsA)
	}
	for _, x := range []struct {
		c  *caddyInstance
		ns string
	}{{a, nsA}, {b, nsB}} {
		if !strings.Contains(x.c.Logs(), fmt.Sprintf(`"prefix":%q`, x.ns)) {
			t.Fatalf("start log does not name the namespace %s:\n%s", x.ns, x.c.Logs())
		}
	}

	// Counters: 8 requests of user 1 on B leave user 1 of A (limit 5)
	// all of its 5.
	redistest.WaitForWindow(t, rdb, 20*time.Second)
	for i := range 8 {
		if r := b.get(t, "/v1/x", keyB); r.Status != 200 {
			t.Fatalf("B request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	for i := range 5 {
		if r := a.get(t, "/v1/x", keyA); r.Status != 200 {
			t.Fatalf("A request %d after 8 on B: %d %s", i+1, r.Status, r.Body)
		}
	}
	authCheckError(t, a.get(t, "/v1/x", keyA), "openai", 429, "USER_RPM_EXCEEDED")

	// A key only A has, used on A (its snapshot now in L2), is unknown on B.
	if r := a.get(t, "/v1/y", onlyA); r.Status != 429 { // known on A; user 1 is at its limit
		t.Fatalf("A with its own key: %d %s", r.Status, r.Body)
	}
	if rdb.Exists(context.Background(), nsA+"snap:"+store.HashKey(onlyA)).Val() != 1 {
		t.Fatal("A wrote no L2 snapshot; the next check would prove nothing")
	}
	authCheckError(t, b.get(t, "/v1/y", onlyA), "openai", 401, "INVALID_API_KEY")

	// A key of A looked up on B first (a negative entry there) is known on A.
	authCheckError(t, b.get(t, "/v1/z", onlyALookedUpOnB), "openai", 401, "INVALID_API_KEY")
	if r := a.get(t, "/v1/z", onlyALookedUpOnB); r.Status != 429 {
		t.Fatalf("A with its key looked up on B first: %d %s, want it known (429: user 1 is at its limit)", r.Status, r.Body)
	}

	// A flush on B deletes B's snapshots only and is not heard by A.
	before := a.metric(t, "caddy_rpm_invalidations_total", `origin="redis"`)
	admWant(t, "flush on B", b.admin(t, http.MethodDelete, "/admin/auth-cache", ""), 200)
	if rdb.Exists(context.Background(), nsA+"snap:"+store.HashKey(onlyA)).Val() != 1 {
		t.Fatal("a flush on B deleted A's L2 snapshot")
	}
	if rdb.Exists(context.Background(), nsB+"snap:"+store.HashKey(keyB)).Val() != 0 {
		t.Fatal("a flush on B left B's L2 snapshot")
	}
	time.Sleep(200 * time.Millisecond) // a published invalidation arrives within ms
	if after := a.metric(t, "caddy_rpm_invalidations_total", `origin="redis"`); after != before {
		t.Fatalf("A applied %v invalidations published by B", after-before)
	}
}

// TestKeysFileReloadDropsChangedSnapshots: with a keys file and Redis, a
// reload with the same content keeps the counters, and a reload after the
// file disabled a key refuses that key at once — no instance serves the
// snapshot of the old content from L1 or from the shared L2.
func TestKeysFileReloadDropsChangedSnapshots(t *testing.T) {
	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	dir := t.TempDir()
	keysPath := filepath.Join(dir, "keys.json")
	raw := "sk-kf-" + randomID() + randomID()
	doc := func(status string) string {
		return `{"users":[{"id":1,"rpm_limit":3}],` +
			`"api_keys":[{"id":1,"user_id":1,"key":"` + raw + `","status":"` + status + `"}]}`
	}
	writeFile(t, keysPath, doc("active"))
	p := params{KeysFile: keysPath, Prefix: prefix, Upstream: up.URL, Cache: "l1_ttl 10m\nl2_ttl 10m"}
	c := startCaddy(t, p)

	redistest.WaitForWindow(t, rdb, 20*time.Second)
	for i := range 2 {
		if r := c.get(t, "/", raw); r.Status != 200 {
			t.Fatalf("request %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	content, err := os.ReadFile(keysPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := store.ParseFile(content)
	if err != nil {
		t.Fatal(err)
	}
	ns := redisNS(t, prefix, f)
	if rdb.Exists(context.Background(), ns+"snap:"+store.HashKey(raw)).Val() != 1 {
		t.Fatal("no L2 snapshot of the key; the test would prove nothing")
	}

	// The same content: the counter goes on (3rd admitted, 4th refused).
	c.reload(t, p)
	if r := c.get(t, "/", raw); r.Status != 200 {
		t.Fatalf("3rd request after a reload: %d %s", r.Status, r.Body)
	}
	authCheckError(t, c.get(t, "/", raw), "openai", 429, "USER_RPM_EXCEEDED")

	// The key disabled in the file: refused within 1 s of the reload.
	writeFile(t, keysPath, doc("disabled"))
	c.reload(t, p)
	testutil.WaitFor(t, time.Second, func() error {
		r := c.get(t, "/", raw)
		if r.Status != 401 || !strings.Contains(r.Body, "API_KEY_DISABLED") {
			return fmt.Errorf("after disabling: %d %s", r.Status, r.Body)
		}
		return nil
	})
}
