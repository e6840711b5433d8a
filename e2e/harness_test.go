// Package e2e runs a real Caddy binary built with this plugin against the
// real Postgres and Redis of the test machine.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

	dto "github.com/prometheus/client_model/go"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/caddyrpm/caddy-rpm/caddyrpm"
	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
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

// givenPorts are the ports freePort has handed out in this process.
var givenPorts struct {
	sync.Mutex
	set map[int]bool
}

// freePort returns a port that was free a moment ago on loopback and on
// every address, and that this process has not handed out before.
//
// Caddy binds with SO_REUSEPORT, so a second Caddy of the same user can
// bind a port ours holds without an error, and a more specific address
// (127.0.0.1:p against our :p) then takes every connection: once, the
// in-process Caddy of the admin package's tests, on a port the kernel
// chose, answered 404 for one of ours. So the ports come from 2100–9999,
// below the kernel's ephemeral range and redistest's 10000–31999.
func freePort(t testing.TB) int {
	t.Helper()
	givenPorts.Lock()
	defer givenPorts.Unlock()
	if givenPorts.set == nil {
		givenPorts.set = map[int]bool{}
	}
	p := testutil.FreePort(t, 2100, 10000, func(p int) bool {
		return !givenPorts.set[p] && testutil.CanListen("127.0.0.1", p) && testutil.CanListen("", p)
	})
	givenPorts.set[p] = true
	return p
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
	cfgPath   string
	cmd       *exec.Cmd
	done      chan struct{}
}

// caddyfile is the one Caddyfile of the tests: an admin endpoint, the rpm
// app and one site. params fill it; empty fields leave their lines out.
var caddyfile = template.Must(template.New("Caddyfile").Option("missingkey=error").Funcs(template.FuncMap{
	// indent puts n tabs before every line of a multi-line option after the
	// first, so that the rendered file (in a failing test's log) reads well.
	"indent": func(n int, s string) string {
		return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+strings.Repeat("\t", n))
	},
}).Parse(`{
	admin {{if .Admin}}127.0.0.1:{{.Admin}}{{else}}off{{end}}
{{- with .Options}}
	{{indent 1 .}}
{{- end}}
	rpm {
{{- with .DSN}}
		postgres "{{.}}"
{{- end}}
{{- with .KeysFile}}
		keys_file {{.}}
{{- end}}
{{- if ne .Redis "off"}}
		redis {{.Redis}}
{{- end}}
{{- with .Prefix}}
		key_prefix {{.}}
{{- end}}
{{- with .Cache}}
		cache {
			{{indent 3 .}}
		}
{{- end}}
{{- with .Global}}
		{{indent 2 .}}
{{- end}}
	}
}
:{{.HTTP}} {
{{- if .Site}}
	{{.Site}}
{{- else}}
	rpm{{with .RPM}} {
		{{indent 2 .}}
	}{{end}}
	{{if .Upstream}}reverse_proxy {{.Upstream}}{{else}}respond "ok"{{end}}
{{- end}}
}
`))

// params fill the test Caddyfile. Every field is optional.
type params struct {
	// HTTP and Admin are the ports; startCaddy picks free ones. Admin 0
	// turns the admin endpoint off.
	HTTP, Admin int
	// Options are further lines of the global options block ("debug").
	Options string
	// DSN, KeysFile, Redis and Prefix are the rpm app's postgres,
	// keys_file, redis and key_prefix. Redis "" is the shared test Redis;
	// "off" leaves redis out.
	DSN, KeysFile, Redis, Prefix string
	// Cache is the body of the rpm app's cache block; "" leaves it out.
	Cache string
	// Global are further lines of the rpm app block.
	Global string
	// RPM is the body of the site's rpm handler directive.
	RPM string
	// Upstream is where the default site proxies to; "" answers "ok".
	Upstream string
	// Site replaces the default site body (the rpm handler and the proxy).
	// It may use the template's fields, such as {{.Upstream}}.
	Site string
}

// render returns the Caddyfile text of p.
func (p params) render(t testing.TB) string {
	t.Helper()
	if p.Redis == "" {
		p.Redis = "redis://" + redistest.SharedAddr
	}
	if p.Site != "" {
		site, err := template.New("site").Option("missingkey=error").Parse(p.Site)
		if err != nil {
			t.Fatalf("parse site: %v", err)
		}
		var b strings.Builder
		if err := site.Execute(&b, p); err != nil {
			t.Fatalf("render site: %v", err)
		}
		p.Site = b.String()
	}
	var buf strings.Builder
	if err := caddyfile.Execute(&buf, p); err != nil {
		t.Fatalf("render caddyfile: %v", err)
	}
	return buf.String()
}

// writeCaddyfile renders p into dir/Caddyfile and returns its path.
func writeCaddyfile(t testing.TB, dir string, p params) string {
	t.Helper()
	path := filepath.Join(dir, "Caddyfile")
	writeFile(t, path, p.render(t))
	return path
}

// startCaddy runs Caddy on the Caddyfile of p, on free ports, until the
// test ends. A port is free only until someone takes it, and the other
// test binaries of `go test ./...` take ports too: a start that finds one
// taken is tried again on others.
func startCaddy(t testing.TB, p params) *caddyInstance {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		p.HTTP, p.Admin = freePort(t), freePort(t)
		c, err := runCaddy(t, dir, writeCaddyfile(t, dir, p), p.HTTP, p.Admin)
		if err == nil {
			return c
		}
		if attempt == 3 || !strings.Contains(c.Logs(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("start %d found a port taken, trying others: %v", attempt, err)
	}
}

// startWithKey starts Caddy with p on a new schema, the shared Redis under
// a new key prefix and a new upstream (p's DSN, Prefix and Upstream are
// set here), with one key of an unlimited user. It returns the raw key and
// the instance.
func startWithKey(t testing.TB, p params) (string, *caddyInstance) {
	t.Helper()
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 0)
	_, key := storetest.SeedKey(t, pool, uid, nil)
	_, prefix := redistest.Shared(t)
	up := newUpstream(t)
	p.DSN, p.Prefix, p.Upstream = dsn, prefix, up.URL
	return key, startCaddy(t, p)
}

// reload renders p on the instance's ports over its Caddyfile and runs
// `caddy reload --force` on it, so that even an unchanged config (whose
// keys file changed, say) is loaded again.
func (c *caddyInstance) reload(t testing.TB, p params) {
	t.Helper()
	p.HTTP, p.Admin = c.HTTPPort, c.AdminPort
	writeFile(t, c.cfgPath, p.render(t))
	out, err := runCaddyCommand(t, "reload", "--force", "--config", c.cfgPath, "--address", fmt.Sprintf("127.0.0.1:%d", c.AdminPort))
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
}

// runCaddy runs `caddy run` on cfgPath in dir and waits until it serves
// its configuration: it logged so (only after binding every listener) and
// httpPort accepts connections. A connection alone proves nothing, since
// another process may hold the port; an error says why Caddy did not start.
func runCaddy(t testing.TB, dir, cfgPath string, httpPort, adminPort int) (*caddyInstance, error) {
	t.Helper()
	logPath := filepath.Join(dir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = caddyEnv(dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &caddyInstance{
		t: t, cmd: cmd, logPath: logPath, cfgPath: cfgPath, done: make(chan struct{}),
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
			return c, fmt.Errorf("caddy exited during start:\n%s", c.Logs())
		default:
		}
		if strings.Contains(c.Logs(), "serving initial configuration") {
			if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", httpPort), 100*time.Millisecond); err == nil {
				conn.Close()
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.Stop()
			return c, fmt.Errorf("caddy did not serve on %d within 20 s:\n%s", httpPort, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// caddyEnv is the environment of a Caddy process: Caddy's data and config
// directories in dir, so that no test touches the user's.
func caddyEnv(dir string) []string {
	return append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
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

// code returns the error code of a gateway error body in the openai
// format ("" if none).
func (r response) code() string {
	var b struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(r.Body), &b)
	return b.Error.Code
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

// metrics reads the instance's /metrics.
func (c *caddyInstance) metrics(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	resp := c.admin(t, http.MethodGet, "/metrics", "")
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.Status, resp.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(resp.Body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// metric returns the sum of the values of a counter's (or gauge's) series
// that carry every given label, each written as in a Prometheus selector:
// name="value".
func (c *caddyInstance) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for _, l := range labels {
		k, quoted, _ := strings.Cut(l, "=")
		v, err := strconv.Unquote(quoted)
		if err != nil {
			t.Fatalf("label %s: want name=\"value\"", l)
		}
		want[k] = v
	}
	var sum float64
	for _, m := range c.metrics(t)[name].GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

// labelsOf returns a series' labels.
func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := labelsOf(m)
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
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
