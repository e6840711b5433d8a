package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// Invalidation listeners after their connections are killed: the Postgres
// LISTEN connection (pg_terminate_backend) and the Redis subscription
// (CLIENT KILL ID) of each instance, found by the process's own TCP ports so
// that other tests' instances on the shared servers are left alone.

// reconPorts returns the local ports of pid's TCP connections to
// 127.0.0.1:remotePort.
func reconPorts(t testing.TB, pid, remotePort int) map[int]bool {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local, remote := fields[1], fields[2]
			rp, err1 := strconv.ParseInt(remote[strings.LastIndex(remote, ":")+1:], 16, 32)
			lp, err2 := strconv.ParseInt(local[strings.LastIndex(local, ":")+1:], 16, 32)
			if err1 == nil && err2 == nil && int(rp) == remotePort {
				ports[int(lp)] = true
			}
		}
		f.Close()
	}
	return ports
}

// reconPGListener returns the backend pid of c's Postgres LISTEN
// connection, 0 if it has none.
func reconPGListener(t testing.TB, e *admEnv, c *caddyInstance) int32 {
	t.Helper()
	ports := reconPorts(t, c.cmd.Process.Pid, 5432)
	rows, err := e.pool.Query(context.Background(), `select pid, coalesce(client_port, 0) from pg_stat_activity
where application_name = 'caddy-rpm listener' and datname = current_database()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var found int32
	for rows.Next() {
		var pid, port int32
		if err := rows.Scan(&pid, &port); err != nil {
			t.Fatal(err)
		}
		if ports[int(port)] {
			if found != 0 {
				t.Fatalf("instance %s has two listener backends: %d and %d", c.URL, found, pid)
			}
			found = pid
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// reconRedisSubscriber returns the Redis client id of c's subscription
// connection, 0 if it has none.
func reconRedisSubscriber(t testing.TB, e *admEnv, c *caddyInstance) int64 {
	t.Helper()
	ports := reconPorts(t, c.cmd.Process.Pid, 6379)
	list, err := e.rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var found int64
	for _, line := range strings.Split(list, "\n") {
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		_, port, _ := strings.Cut(f["addr"], ":")
		p, _ := strconv.Atoi(port)
		if !ports[p] || f["sub"] == "" || f["sub"] == "0" {
			continue
		}
		id, _ := strconv.ParseInt(f["id"], 10, 64)
		if found != 0 {
			t.Fatalf("instance %s has two subscriber connections: %d and %d", c.URL, found, id)
		}
		found = id
	}
	return found
}

// reconListeners waits until c has both listeners other than the given
// old ones, and returns them.
func reconListeners(t testing.TB, e *admEnv, c *caddyInstance, oldPG int32, oldRedis int64) (int32, int64) {
	t.Helper()
	var pg int32
	var rd int64
	testutil.WaitFor(t, 10*time.Second, func() error {
		pg, rd = reconPGListener(t, e, c), reconRedisSubscriber(t, e, c)
		if pg == 0 || pg == oldPG {
			return fmt.Errorf("instance %s: no new Postgres listener (had %d)", c.URL, oldPG)
		}
		if rd == 0 || rd == oldRedis {
			return fmt.Errorf("instance %s: no new Redis subscriber (had %d)", c.URL, oldRedis)
		}
		return nil
	})
	return pg, rd
}

// TestAdminAPIReconnect kills both instances' listener connections and
// checks that they come back and that invalidation works again: a change
// made while they were down, a later SQL change, and an explicit admin
// invalidation all reach instance 2.
func TestAdminAPIReconnect(t *testing.T) {
	e := admSetup(t)
	ctx := context.Background()
	uid := storetest.SeedUser(t, e.pool, 0)
	kid, key := storetest.SeedKey(t, e.pool, uid, nil)
	c1, c2 := e.start(t, ""), e.start(t, "")
	pg1, rd1 := reconListeners(t, e, c1, 0, 0)
	pg2, rd2 := reconListeners(t, e, c2, 0, 0)
	propWarm(t, c1, key, 200)
	propWarm(t, c2, key, 200)

	for _, pid := range []int32{pg1, pg2} {
		var ok bool
		if err := e.pool.QueryRow(ctx, `select pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
		}
	}
	for _, id := range []int64{rd1, rd2} {
		if err := e.rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
			t.Fatalf("CLIENT KILL ID %d: %v", id, err)
		}
	}
	// Revoke the key while both instances are deaf: its notification is
	// lost on both, and the L2 entry nobody deleted still says active.
	storetest.Exec(t, e.pool, `update rpm_api_keys set status = 'disabled' where id = $1`, kid)

	reconListeners(t, e, c1, pg1, rd1)
	reconListeners(t, e, c2, pg2, rd2)
	back := time.Now()
	for _, c := range []*caddyInstance{c1, c2} {
		if d := propFlip(t, c, key, back, 401, "API_KEY_DISABLED"); d > propWithin {
			t.Errorf("instance %s enforced the change made during the gap %v after its listeners were back", c.URL, d)
		}
	}

	// A SQL change afterwards propagates as usual.
	propWarm(t, c1, key, 401)
	propWarm(t, c2, key, 401)
	start := time.Now()
	storetest.Exec(t, e.pool, `update rpm_api_keys set status = 'active' where id = $1`, kid)
	if d := propFlip(t, c2, key, start, 200, ""); d > propWithin {
		t.Errorf("SQL change after the reconnect reached instance 2 after %v", d)
	} else {
		t.Logf("SQL change after the reconnect reached instance 2 after %v", d)
	}

	// An explicit invalidation on instance 1 (Redis only, no data change)
	// drops instance 2's L1 entry.
	propWarm(t, c1, key, 200)
	propWarm(t, c2, key, 200)
	misses := c2.metric(t, "caddy_rpm_cache_misses_total", `layer="l1"`)
	got := c2.metric(t, "caddy_rpm_invalidations_total", `scope="user"`, `origin="redis"`)
	admWant(t, "invalidate user", c1.admin(t, http.MethodDelete, "/admin/auth-cache/users/"+testutil.Itoa(uid), ""), 200)
	testutil.WaitFor(t, propWithin, func() error {
		if n := c2.metric(t, "caddy_rpm_invalidations_total", `scope="user"`, `origin="redis"`); n <= got {
			return fmt.Errorf("instance 2 received no user invalidation over Redis")
		}
		return nil
	})
	admExpect(t, c2, key, 200, "")
	if m := c2.metric(t, "caddy_rpm_cache_misses_total", `layer="l1"`); m != misses+1 {
		t.Fatalf("instance 2 L1 misses %v -> %v after the invalidation, want +1", misses, m)
	}
	if !strings.Contains(c2.Logs(), "listening for invalidations again") {
		t.Errorf("instance 2 did not log the Postgres listener's return")
	}
}
