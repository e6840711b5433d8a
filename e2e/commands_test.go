package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// How Redis commands are counted
//
// The tests run Caddy against a private redis-server and watch it with
// MONITOR, which prints every command the server executes with the client
// that sent it: "<ts> [<db> <ip:port>] "<cmd>" ...". Commands a Lua script
// runs are printed as "[<db> lua]", so the commands of the check script
// (TIME, HMGET, HSET, ...) are told apart from what a client sent, which
// INFO commandstats cannot do. A client command counts unless it comes
// from the test itself (its marker ECHOs) or from a subscribed connection
// (the invalidation listener's keep-alive PINGs, not tied to requests).
// Between two markers the server has executed everything the requests in
// between sent, because each request's Redis call finished before Caddy
// answered it.

// cmdMonitor records the commands a redis-server executes.
type cmdMonitor struct {
	t      testing.TB
	rdb    *redis.Client // sends markers and CLIENT LIST
	mu     sync.Mutex
	lines  []string
	seen   chan struct{} // signalled on every new line
	marker int
}

// cmdCommand is one client command from MONITOR.
type cmdCommand struct {
	addr string // client ip:port
	name string // lowercase command name
	line string
}

func newCmdMonitor(t testing.TB, addr string) *cmdMonitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if l, err := r.ReadString('\n'); err != nil || strings.TrimSpace(l) != "+OK" {
		t.Fatalf("MONITOR: %q %v", l, err)
	}
	m := &cmdMonitor{t: t, rdb: redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1}), seen: make(chan struct{}, 1)}
	t.Cleanup(func() { m.rdb.Close() })
	go func() {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, strings.TrimSpace(strings.TrimPrefix(l, "+")))
			m.mu.Unlock()
			select {
			case m.seen <- struct{}{}:
			default:
			}
		}
	}()
	return m
}

// mark sends a unique ECHO and waits until MONITOR shows it; it returns
// the position after it.
func (m *cmdMonitor) mark() int {
	m.t.Helper()
	m.marker++
	token := fmt.Sprintf("cmd-marker-%s-%d", randomID(), m.marker)
	if err := m.rdb.Echo(context.Background(), token).Err(); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		m.mu.Lock()
		for i := len(m.lines) - 1; i >= 0; i-- {
			if strings.Contains(m.lines[i], token) {
				m.mu.Unlock()
				return i + 1
			}
		}
		m.mu.Unlock()
		select {
		case <-m.seen:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			m.t.Fatalf("marker %s not seen by MONITOR", token)
		}
	}
}

// between returns the client commands from position from up to to.
func (m *cmdMonitor) between(from, to int) []cmdCommand {
	m.t.Helper()
	subscribed := map[string]bool{}
	list, err := m.rdb.ClientList(context.Background()).Result()
	if err != nil {
		m.t.Fatal(err)
	}
	for _, l := range strings.Split(list, "\n") {
		var addr string
		sub := false
		for _, f := range strings.Fields(l) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "addr":
				addr = v
			case "sub", "psub", "ssub":
				if v != "0" {
					sub = true
				}
			}
		}
		if sub {
			subscribed[addr] = true
		}
	}
	m.mu.Lock()
	lines := append([]string(nil), m.lines[from:to]...)
	m.mu.Unlock()
	var out []cmdCommand
	for _, l := range lines {
		open, closeIdx := strings.IndexByte(l, '['), strings.IndexByte(l, ']')
		if open < 0 || closeIdx < open {
			m.t.Fatalf("bad MONITOR line %q", l)
		}
		f := strings.Fields(l[open+1 : closeIdx])
		if len(f) != 2 {
			m.t.Fatalf("bad MONITOR line %q", l)
		}
		addr := f[1]
		name := strings.ToLower(strings.Trim(strings.Fields(l[closeIdx+1:])[0], `"`))
		if addr == "lua" || subscribed[addr] || (name == "echo" && strings.Contains(l, "cmd-marker-")) {
			continue
		}
		out = append(out, cmdCommand{addr: addr, name: name, line: l})
	}
	return out
}

// count runs f and returns the client commands it caused.
func (m *cmdMonitor) count(f func()) []cmdCommand {
	m.t.Helper()
	from := m.mark()
	f()
	return m.between(from, m.mark())
}

// cmdWant asserts the number of client commands and that each is one of
// names.
func cmdWant(t testing.TB, what string, cmds []cmdCommand, want int, names ...string) {
	t.Helper()
	bad := len(cmds) != want
	for _, c := range cmds {
		ok := false
		for _, n := range names {
			ok = ok || c.name == n
		}
		bad = bad || !ok
	}
	if bad {
		var b strings.Builder
		for _, c := range cmds {
			b.WriteString("\n  " + c.line)
		}
		t.Fatalf("%s: %d client commands, want %d of %v:%s", what, len(cmds), want, names, b.String())
	}
}

// cmdSettle waits until the instance has applied the database
// notifications sent so far: its invalidation count stays unchanged for
// a second.
func cmdSettle(t testing.TB, c *caddyInstance) {
	t.Helper()
	last, since := -1.0, time.Now()
	testutil.WaitFor(t, 15*time.Second, func() error {
		n := c.metric(t, "caddy_rpm_invalidations_total", `origin="postgres"`)
		if n != last {
			last, since = n, time.Now()
		}
		if n == 0 || time.Since(since) < time.Second {
			return fmt.Errorf("%v invalidations applied, last change %v ago", n, time.Since(since))
		}
		return nil
	})
}

// TestCommandsPerRequest proves spec §11's round trips with reservations
// off: exactly one Redis command (EVALSHA) per request when a limit
// applies, route limits included; none when no limit applies; none for a
// request the local deny cache refuses. TestCommandsReserving shows the
// default, with reservations, which needs fewer.
func TestCommandsPerRequest(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	e := newLimEnvOn(t, rdb)
	c := e.caddy(t, srv.Addr, "reservation_ttl 0", `handle /img/* {
		rpm {
			zone img
			limit user 1000
			limit key 1000
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		rpm
		reverse_proxy {{.Upstream}}
	}`)
	mon := newCmdMonitor(t, srv.Addr)

	limited := storetest.SeedUser(t, e.pool, 1000)
	lgid := storetest.SeedGroup(t, e.pool, "", 1000)
	_, limitedKey := e.seedKey(t, limited, &lgid)

	free := storetest.SeedUser(t, e.pool, 0)
	fgid := storetest.SeedGroup(t, e.pool, "", 0)
	_, freeKey := e.seedKey(t, free, &fgid)

	exempt := storetest.SeedUser(t, e.pool, 0) // override 0 / user 0
	egid := storetest.SeedGroup(t, e.pool, "", 1)
	storetest.SeedOverride(t, e.pool, exempt, egid, 0)
	_, exemptKey := e.seedKey(t, exempt, &egid)

	small := storetest.SeedUser(t, e.pool, 2)
	_, smallKey := e.seedKey(t, small, nil)

	fresh := storetest.SeedUser(t, e.pool, 5)
	_, freshKey := e.seedKey(t, fresh, nil)

	// The seeding above sends database notifications; one arriving after
	// the warm-up would evict a snapshot and cost a reload mid-measure.
	cmdSettle(t, c)
	redistest.WaitForWindow(t, rdb, 15*time.Second)
	// Warm up: the first request of a key fills the snapshot caches (an
	// L2 GET and SET) and loads the script; steady state starts after.
	for _, k := range []string{limitedKey, freeKey, exemptKey} {
		limExpect(t, c, "/v1/x", k, []int{200}, "")
	}

	const n = 20
	cmds := mon.count(func() { limExpect(t, c, "/v1/x", limitedKey, limRepeat(200, n), "") })
	cmdWant(t, "user+group limits", cmds, n, "evalsha")

	cmds = mon.count(func() { limExpect(t, c, "/img/x", limitedKey, limRepeat(200, n), "") })
	cmdWant(t, "user+group+two route limits", cmds, n, "evalsha")

	cmds = mon.count(func() { limExpect(t, c, "/v1/x", freeKey, limRepeat(200, 50), "") })
	cmdWant(t, "no limit", cmds, 0)

	cmds = mon.count(func() { limExpect(t, c, "/v1/x", exemptKey, limRepeat(200, 50), "") })
	cmdWant(t, "override 0 / user 0", cmds, 0)

	// The small user's first request also fills the caches; count from
	// the second one.
	limExpect(t, c, "/v1/x", smallKey, []int{200}, "")
	cmds = mon.count(func() { limExpect(t, c, "/v1/x", smallKey, []int{200, 429}, "USER_RPM_EXCEEDED") })
	cmdWant(t, "admitted then first refusal", cmds, 2, "evalsha")
	cmds = mon.count(func() { limExpect(t, c, "/v1/x", smallKey, limRepeat(429, 10), "USER_RPM_EXCEEDED") })
	cmdWant(t, "refusals from the local deny cache", cmds, 0)
	e.wantCount(t, "user", e.keys.User(small), 2)

	// The measure itself works: the warm-up of a new key is visible.
	cmds = mon.count(func() { limExpect(t, c, "/v1/x", freshKey, []int{200}, "") })
	if len(cmds) < 2 {
		t.Fatalf("a cold key caused %d commands; the monitor misses commands", len(cmds))
	}
}

// TestCommandsReserving: with reservations (the default), back-to-back
// requests of one key far from its limits need fewer EVALSHA than
// requests, and once the idle reservation is handed back Redis counts
// exactly the requests admitted.
func TestCommandsReserving(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	e := newLimEnvOn(t, rdb)
	c := e.caddy(t, srv.Addr, "", `rpm
	reverse_proxy {{.Upstream}}`)
	mon := newCmdMonitor(t, srv.Addr)
	uid, gid, key := e.seedGroupedKey(t, 100000, 100000, noOverride)
	cmdSettle(t, c)
	redistest.WaitForWindow(t, rdb, 15*time.Second)
	limExpect(t, c, "/v1/x", key, []int{200}, "") // warm-up: fills the caches

	const n = 200
	cmds := mon.count(func() {
		limExpect(t, c, "/v1/x", key, limRepeat(200, n), "")
		time.Sleep(limiter.DefaultReservationTTL + 100*time.Millisecond) // the hand-back
	})
	evalsha := 0
	for _, cmd := range cmds {
		if cmd.name == "evalsha" {
			evalsha++
		}
	}
	if evalsha >= n {
		t.Fatalf("%d EVALSHA for %d requests with reservations on", evalsha, n)
	}
	t.Logf("%d EVALSHA (checks and hand-backs) for %d requests", evalsha, n)
	e.wantCount(t, "user", e.keys.User(uid), n+1)
	e.wantCount(t, "(user, group)", e.keys.UserGroup(uid, gid), n+1)
}
