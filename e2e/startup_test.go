package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// runCaddyFailing runs `caddy run` on the Caddyfile of p and returns its
// output, failing the test unless Caddy exits with an error within 30 s.
func runCaddyFailing(t *testing.T, p params) string {
	t.Helper()
	p.HTTP, p.Admin = freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := writeCaddyfile(t, dir, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, "run", "--config", cfg)
	cmd.Dir = dir
	cmd.Env = caddyEnv(dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("caddy did not exit within 30s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("caddy started and exited cleanly:\n%s", out)
	}
	return string(out)
}

// TestStartPostgresDown: with Redis configured, the store identity that
// names the Redis keys is read from Postgres at start; Postgres down is a
// start error that names the cause, within the identity query's bound.
func TestStartPostgresDown(t *testing.T) {
	start := time.Now()
	out := runCaddyFailing(t, params{DSN: fmt.Sprintf("postgres://root@127.0.0.1:%d/test?connect_timeout=10", freePort(t))})
	if !strings.Contains(out, "postgres must be reachable at start when redis is configured") {
		t.Fatalf("start error does not name the cause:\n%s", out)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("start took %v to fail", d)
	}
}

// TestRedisPasswordNeverShown: a Redis URL's password appears in no start
// error and no log line — neither for a URL that does not parse, nor while
// running against a server that refuses it or does not answer (requests
// are admitted: fail open).
func TestRedisPasswordNeverShown(t *testing.T) {
	const secret = "Redis-S3cret-" + "x9q"
	t.Run("config error", func(t *testing.T) {
		for _, url := range []string{
			"redis://:" + secret + "@127.0.0.1:notaport/0",
			"redis://:" + secret + "@127.0.0.1:6379/0?pool_size=many",
		} {
			out := runCaddyFailing(t, params{KeysFile: demoKeysPath(t), Redis: url})
			if strings.Contains(out, secret) {
				t.Fatalf("the password is shown:\n%s", out)
			}
			if !strings.Contains(out, ":xxxxx@127.0.0.1") {
				t.Fatalf("the error does not show the redacted address:\n%s", out)
			}
		}
	})
	// A private server that wants another password, and a closed port.
	private := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: private.Addr})
	if err := rdb.ConfigSet(context.Background(), "requirepass", "the-right-one").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	for name, addr := range map[string]string{
		"wrong password": private.Addr,
		"down":           fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	} {
		t.Run(name, func(t *testing.T) {
			pool, dsn := storetest.NewSchema(t)
			uid := storetest.SeedUser(t, pool, 5)
			_, key := storetest.SeedKey(t, pool, uid, nil)
			up := newUpstream(t)
			c := startCaddy(t, params{Options: "debug", DSN: dsn, Prefix: redistest.Prefix(t), Upstream: up.URL,
				Redis: "redis://:" + secret + "@" + addr + "/0?dial_timeout=200ms"})
			for range 3 {
				if r := c.get(t, "/v1/x", key); r.Status != http.StatusOK {
					t.Fatalf("fail open: %d %s", r.Status, r.Body)
				}
			}
			// The Redis errors are logged (with go-redis's message), so the
			// check below looks at lines that could carry the password.
			testutil.WaitFor(t, 5*time.Second, func() error {
				logs := c.Logs()
				if !strings.Contains(logs, "redis did not answer at start") || !strings.Contains(logs, "rate limiter backend failed") {
					return fmt.Errorf("redis failures not logged yet")
				}
				return nil
			})
			for i, line := range strings.Split(c.Logs(), "\n") {
				if strings.Contains(line, secret) {
					t.Errorf("password in log line %d: %s", i+1, line)
				}
			}
		})
	}
}
