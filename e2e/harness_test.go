// Package e2e runs a real Caddy binary built with this plugin against the
// real Postgres and Redis of the test machine.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/caddyrpm"
	"github.com/caddyrpm/caddy-rpm/store"
)

var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-rpm-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "../cmd/caddy")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build caddy:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// upstream is the API behind the gateway: it answers 200 and records what
// reached it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"upstream":true,"user":%q,"group":%q}`, r.Header.Get("X-User"), r.Header.Get("X-Group"))
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) headers() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.seen...)
}

// caddyInstance is one running Caddy process.
type caddyInstance struct {
	t         testing.TB
	URL       string // the gateway's base URL
	AdminURL  string
	HTTPPort  int
	AdminPort int
	logPath   string
	cmd       *exec.Cmd
	done      chan struct{}
}

// params fill a Caddyfile template: {{.HTTP}}, {{.Admin}}, {{.Upstream}},
// {{.Prefix}}, {{.DSN}} and anything in Extra.
type params struct {
	HTTP, Admin int
	Upstream    string
	Prefix      string
	DSN         string
	Redis       string // default redis://127.0.0.1:6379; "off" in templates that allow it: none
	Extra       map[string]string
}

// startCaddy renders the Caddyfile template and runs Caddy on it until the
// test ends.
func startCaddy(t testing.TB, caddyfile string, p params) *caddyInstance {
	t.Helper()
	p.HTTP, p.Admin = freePort(t), freePort(t)
	if p.Redis == "" {
		p.Redis = "redis://127.0.0.1:6379"
	}
	var buf bytes.Buffer
	if err := template.Must(template.New("cf").Option("missingkey=error").Parse(caddyfile)).Execute(&buf, p); err != nil {
		t.Fatalf("render caddyfile: %v", err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return runCaddy(t, dir, cfgPath, p.HTTP, p.Admin)
}

func runCaddy(t testing.TB, dir, cfgPath string, httpPort, adminPort int) *caddyInstance {
	t.Helper()
	logPath := filepath.Join(dir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &caddyInstance{
		t: t, cmd: cmd, logPath: logPath, done: make(chan struct{}),
		URL:      "http://127.0.0.1:" + strconv.Itoa(httpPort),
		AdminURL: "http://127.0.0.1:" + strconv.Itoa(adminPort),
		HTTPPort: httpPort, AdminPort: adminPort,
	}
	go func() { _ = cmd.Wait(); logFile.Close(); close(c.done) }()
	t.Cleanup(c.Stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-c.done:
			t.Fatalf("caddy exited during start:\n%s", c.Logs())
		default:
		}
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort), 100*time.Millisecond); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not listen on %d:\n%s", httpPort, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the process (idempotent).
func (c *caddyInstance) Stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Logs returns everything the process wrote so far.
func (c *caddyInstance) Logs() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

var client = &http.Client{Timeout: 15 * time.Second}

type response struct {
	Status int
	Header http.Header
	Body   string
}

// do sends a request to the gateway with optional headers ("Name: value").
func (c *caddyInstance) do(t testing.TB, method, path string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, c.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(name, strings.TrimSpace(value))
	}
	return send(t, req)
}

// get sends a GET with a bearer key ("" = none).
func (c *caddyInstance) get(t testing.TB, path, key string) response {
	t.Helper()
	if key == "" {
		return c.do(t, http.MethodGet, path)
	}
	return c.do(t, http.MethodGet, path, "Authorization: Bearer "+key)
}

// admin calls the admin API.
func (c *caddyInstance) admin(t testing.TB, method, path, body string, headers ...string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.AdminURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(name, strings.TrimSpace(value))
	}
	return send(t, req)
}

func send(t testing.TB, req *http.Request) response {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

// metric reads the sum of a counter's series from /metrics whose labels
// contain every given "name=\"value\"" fragment.
func (c *caddyInstance) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	resp := c.admin(t, http.MethodGet, "/metrics", "")
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(resp.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// newRedis returns a client for the test Redis and deletes prefix* at the end.
func newRedis(t testing.TB, prefix string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return rdb
}

// redisNS returns the prefix under which a Caddy with this key_prefix on
// store s keeps its Redis keys and channel ("<prefix>c:…", "<prefix>snap:…",
// "<prefix>invalidate"), computed from the same inputs as the plugin. Tests
// that read Redis keys directly name them through this.
func redisNS(t testing.TB, keyPrefix string, s store.Identifier) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := s.StoreID(ctx)
	if err != nil {
		t.Fatalf("store id: %v", err)
	}
	return caddyrpm.RedisPrefix(keyPrefix, id)
}

// pgRedisNS is redisNS for the Postgres schema of pool.
func pgRedisNS(t testing.TB, keyPrefix string, pool *pgxpool.Pool) string {
	t.Helper()
	return redisNS(t, keyPrefix, store.NewPostgres(pool))
}

// waitForLocalWindow is waitForWindow for the in-process limiter's clock.
func waitForLocalWindow(need time.Duration) {
	now := time.Now()
	left := now.Truncate(time.Minute).Add(time.Minute).Sub(now)
	if left < need {
		time.Sleep(left + 200*time.Millisecond)
	}
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }
