package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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

// gate is an upstream that holds every request until the test lets it go
// (or its client went away), so that requests stay in flight as long as a
// test needs them to; requests to /pass/ pass at once, and those to
// /fail/ fail (the connection is cut before any answer).
type gate struct {
	*httptest.Server
	// arrived receives the X-Shadow-Refused header of every request that
	// reached the upstream.
	arrived chan string
	open    chan struct{} // closed by releaseAll
	once    sync.Once
}

func newGate(t testing.TB) *gate {
	g := &gate{arrived: make(chan string, 64), open: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail/") {
			panic(http.ErrAbortHandler)
		}
		if strings.HasPrefix(r.URL.Path, "/pass/") {
			io.WriteString(w, `{"upstream":true}`)
			return
		}
		g.arrived <- r.Header.Get("X-Shadow-Refused")
		select {
		case <-g.open:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"upstream":true}`)
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.releaseAll) // runs before Close
	return g
}

// releaseAll lets every held request go, and every later one pass.
func (g *gate) releaseAll() { g.once.Do(func() { close(g.open) }) }

// waitArrived waits until n more requests reached the upstream and
// returns their X-Shadow-Refused headers.
func (g *gate) waitArrived(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case h := <-g.arrived:
			out = append(out, h)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d requests reached the upstream", len(out), n)
		}
	}
	return out
}

// hit is the outcome of a request sent in the background.
type hit struct {
	status int
	err    error
}

// goHit sends a GET with key to url in the background.
func goHit(ctx context.Context, url, key string) <-chan hit {
	ch := make(chan hit, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			ch <- hit{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := limClient.Do(req)
		if err != nil {
			ch <- hit{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ch <- hit{status: resp.StatusCode}
	}()
	return ch
}

// wantHit waits for a background request and checks its status.
func wantHit(t testing.TB, ch <-chan hit, status int) {
	t.Helper()
	select {
	case h := <-ch:
		if h.err != nil || h.status != status {
			t.Fatalf("background request: %d, %v; want %d", h.status, h.err, status)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("background request did not end")
	}
}

// wantConcurrencyRefusal checks a 429 CONCURRENCY_EXCEEDED answer that
// names the cap.
func wantConcurrencyRefusal(t testing.TB, r response, cap string) {
	t.Helper()
	if r.Status != http.StatusTooManyRequests || r.code() != "CONCURRENCY_EXCEEDED" {
		t.Fatalf("status %d code %q, want 429 CONCURRENCY_EXCEEDED: %s", r.Status, r.code(), r.Body)
	}
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if !strings.Contains(r.Body, cap) {
		t.Errorf("message does not name %q: %s", cap, r.Body)
	}
}

// seedCappedUser seeds a user with the given rpm limit and one API key of
// theirs, and sets their concurrency through c's admin API.
func (e *limEnv) seedCappedUser(t testing.TB, c *caddyInstance, rpm, concurrency int64) (uid int64, key string) {
	t.Helper()
	uid = storetest.SeedUser(t, e.pool, rpm)
	_, key = e.seedKey(t, uid, nil)
	if r := c.admin(t, http.MethodPatch, "/admin/users/"+testutil.Itoa(uid), fmt.Sprintf(`{"concurrency":%d}`, concurrency)); r.Status != http.StatusOK {
		t.Fatalf("PATCH concurrency: %d %s", r.Status, r.Body)
	}
	return uid, key
}

// slotsHeld is how many requests a slot set holds in Redis (unexpired).
func (e *limEnv) slotsHeld(t testing.TB, key string) int64 {
	t.Helper()
	held, err := limiter.NewRedis(e.rdb).PeekSlots(context.Background(), []string{key})
	if err != nil {
		t.Fatalf("peek %s: %v", key, err)
	}
	return held[0]
}

// waitSlotsHeld waits up to within for the slot set key to hold want
// requests; when says at what point of the test, for the failure.
func (e *limEnv) waitSlotsHeld(t testing.TB, within time.Duration, key string, want int64, when string) {
	t.Helper()
	testutil.WaitFor(t, within, func() error {
		if held := e.slotsHeld(t, key); held != want {
			return fmt.Errorf("slot set %s holds %d %s, want %d", key, held, when, want)
		}
		return nil
	})
}

// gatedCaddy starts a limEnv and one instance (exactGlobal) whose rpm
// handler, with the given block, stands in front of a new gate (see
// gatedSite). The gate lets its requests go before the instance stops, so
// that stopping does not wait on held requests.
func gatedCaddy(t testing.TB, block string) (*limEnv, *gate, *caddyInstance) {
	t.Helper()
	e := newLimEnv(t)
	g := newGate(t)
	c := e.caddy(t, "", exactGlobal, gatedSite(g, block))
	t.Cleanup(g.releaseAll) // runs before the instance's own cleanup
	return e, g, c
}

// gatedSite is the rpm handler (with the given block, "" for none) in
// front of the gate.
func gatedSite(g *gate, block string) string {
	rpm := "rpm"
	if block != "" {
		rpm += " {\n\t\t" + strings.ReplaceAll(strings.TrimSpace(block), "\n", "\n\t\t") + "\n\t}"
	}
	return rpm + "\n\treverse_proxy " + g.URL + " {\n\t\theader_up X-Shadow-Refused {http.rpm.shadow_refused}\n\t}"
}

// TestConcurrencyUserCap: a user with concurrency 2 (set through the
// admin API) sends 3 requests at once: two reach the upstream, the third
// is refused 429 CONCURRENCY_EXCEEDED with Retry-After 1 while rpm-status
// and the in-flight gauge show 2; when the responses end, the places come
// back and a 4th request is admitted.
func TestConcurrencyUserCap(t *testing.T) {
	e, g, c := gatedCaddy(t, "")
	uid, key := e.seedCappedUser(t, c, 100, 2)

	a, b := goHit(t.Context(), c.URL+"/v1/x", key), goHit(t.Context(), c.URL+"/v1/x", key)
	g.waitArrived(t, 2)
	wantConcurrencyRefusal(t, c.get(t, "/v1/x", key), "the user's limit of 2 concurrent requests")

	r := c.admin(t, http.MethodGet, "/admin/users/"+testutil.Itoa(uid)+"/rpm-status", "")
	if !strings.Contains(r.Body, `"concurrency":2`) || !strings.Contains(r.Body, `"in_flight":2`) {
		t.Errorf("rpm-status while 2 are in flight: %s", r.Body)
	}
	if n := c.metric(t, "caddy_rpm_in_flight"); n != 2 {
		t.Errorf("caddy_rpm_in_flight = %v, want 2", n)
	}
	if n := c.metric(t, "caddy_rpm_decisions_total", `result="refused"`, `reason="CONCURRENCY_EXCEEDED"`); n != 1 {
		t.Errorf("decisions{refused,CONCURRENCY_EXCEEDED} = %v, want 1", n)
	}
	if held := e.slotsHeld(t, e.keys.UserSlots(uid)); held != 2 {
		t.Errorf("the user's slot set holds %d, want 2 (the refused request took nothing)", held)
	}
	// The refused request was counted in no per-minute limit either.
	e.wantCount(t, "user", e.keys.User(uid), 2)

	g.releaseAll()
	wantHit(t, a, http.StatusOK)
	wantHit(t, b, http.StatusOK)
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after the responses ended")
	if n := c.metric(t, "caddy_rpm_in_flight"); n != 0 {
		t.Errorf("caddy_rpm_in_flight = %v after the responses ended, want 0", n)
	}
	if r := c.get(t, "/v1/x", key); r.Status != http.StatusOK {
		t.Fatalf("4th request: %d %s, want 200", r.Status, r.Body)
	}
}

// TestConcurrencyClientHangsUp: a client that goes away while its request
// is held upstream gives its place back within a second.
func TestConcurrencyClientHangsUp(t *testing.T) {
	e, g, c := gatedCaddy(t, "")
	uid, key := e.seedCappedUser(t, c, 100, 1)

	ctx, hangUp := context.WithCancel(t.Context())
	gone := goHit(ctx, c.URL+"/v1/x", key)
	g.waitArrived(t, 1)
	wantConcurrencyRefusal(t, c.get(t, "/v1/x", key), "the user's limit of 1 concurrent requests")
	hangUp()
	if h := <-gone; h.err == nil {
		t.Fatalf("the hung-up request got an answer: %d", h.status)
	}
	start := time.Now()
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after the client hung up")
	t.Logf("place back %v after the hang-up", time.Since(start))
	next := goHit(t.Context(), c.URL+"/v1/x", key)
	g.waitArrived(t, 1)
	g.releaseAll()
	wantHit(t, next, http.StatusOK)
}

// TestConcurrencyUpstreamFails: a request whose upstream fails (502)
// gives its place back.
func TestConcurrencyUpstreamFails(t *testing.T) {
	e, _, c := gatedCaddy(t, "")
	uid, key := e.seedCappedUser(t, c, 100, 1)

	for i := range 3 {
		if r := c.get(t, "/fail/x", key); r.Status != http.StatusBadGateway {
			t.Fatalf("request %d to a failing upstream: %d %s, want 502", i+1, r.Status, r.Body)
		}
		e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after the upstream failed")
	}
	if r := c.get(t, "/pass/x", key); r.Status != http.StatusOK {
		t.Fatalf("after the failures: %d %s, want 200", r.Status, r.Body)
	}
}

// TestConcurrencyAcrossInstancesAndKill: two instances share a user's cap
// of 2; when one of them is killed (SIGKILL) with a request in flight, its
// place stays taken until its lease expires (concurrency_lease 3s here),
// then returns by itself.
func TestConcurrencyAcrossInstancesAndKill(t *testing.T) {
	const lease = 3 * time.Second
	e := newLimEnv(t)
	g := newGate(t)
	defer g.releaseAll()
	global := exactGlobal + "\nconcurrency_lease 3s"
	c1 := e.caddy(t, "", global, gatedSite(g, ""))
	c2 := e.caddy(t, "", global, gatedSite(g, ""))
	uid, key := e.seedCappedUser(t, c1, 1000, 2)

	onC1 := goHit(t.Context(), c1.URL+"/v1/x", key)
	onC2 := goHit(t.Context(), c2.URL+"/v1/x", key)
	g.waitArrived(t, 2)
	for _, c := range []*caddyInstance{c1, c2} {
		wantConcurrencyRefusal(t, c.get(t, "/v1/x", key), "the user's limit of 2 concurrent requests")
	}

	// Past several renewals, the places are still held.
	time.Sleep(lease + time.Second)
	if held := e.slotsHeld(t, e.keys.UserSlots(uid)); held != 2 {
		t.Fatalf("after %v the slot set holds %d, want 2: live instances renew their leases", lease+time.Second, held)
	}

	if err := c1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c1.done
	killed := time.Now()
	if h := <-onC1; h.err == nil {
		t.Fatalf("the killed instance answered: %d", h.status)
	}
	wantConcurrencyRefusal(t, c2.get(t, "/v1/x", key), "the user's limit of 2 concurrent requests")

	// The dead instance's place returns within the lease; c2's own request
	// still holds the other.
	testutil.WaitFor(t, lease+time.Second, func() error {
		r := c2.get(t, "/pass/x", key)
		if r.Status == http.StatusOK {
			return nil
		}
		if r.Status != http.StatusTooManyRequests {
			return fmt.Errorf("status %d: %s", r.Status, r.Body)
		}
		return fmt.Errorf("still refused %v after the kill", time.Since(killed))
	})
	t.Logf("the killed instance's place returned %v after the kill (lease %v)", time.Since(killed), lease)
	// The admitted request's release is asynchronous.
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 1, "after the dead instance's place expired (c2's request)")
	g.releaseAll()
	wantHit(t, onC2, http.StatusOK)
}

// TestConcurrencyRouteKeyCap: a route with `concurrency key 1` holds one
// request per API key: a second request of the key is refused with a
// message naming the route's cap, another key of the same user is not.
func TestConcurrencyRouteKeyCap(t *testing.T) {
	e, g, c := gatedCaddy(t, "zone chat\nconcurrency key 1")
	uid := storetest.SeedUser(t, e.pool, 100)
	kid, key := e.seedKey(t, uid, nil)
	_, other := e.seedKey(t, uid, nil)

	first := goHit(t.Context(), c.URL+"/v1/x", key)
	g.waitArrived(t, 1)
	wantConcurrencyRefusal(t, c.get(t, "/v1/x", key), `the route limit \"chat\" of 1 concurrent requests per API key`)
	if held := e.slotsHeld(t, e.keys.ZoneKeySlots("chat", uid, kid)); held != 1 {
		t.Errorf("the key's slot set in zone chat holds %d, want 1", held)
	}
	second := goHit(t.Context(), c.URL+"/v1/x", other)
	g.waitArrived(t, 1)
	g.releaseAll()
	wantHit(t, first, http.StatusOK)
	wantHit(t, second, http.StatusOK)
}

// TestConcurrencySSEHoldsItsPlace: a streamed (SSE) response holds its
// place until its last event: a request during the stream is refused, one
// after it ends is admitted.
func TestConcurrencySSEHoldsItsPlace(t *testing.T) {
	last := make(chan struct{})
	var once sync.Once
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-last:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: last\n\n")
	}))
	t.Cleanup(sse.Close)
	t.Cleanup(func() { once.Do(func() { close(last) }) })
	e := newLimEnv(t)
	c := e.caddy(t, "", exactGlobal, "rpm\n\treverse_proxy "+sse.URL+" {\n\t\tflush_interval -1\n\t}")
	_, key := e.seedCappedUser(t, c, 100, 1)

	req, _ := http.NewRequest(http.MethodGet, c.URL+"/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || sc.Text() != "data: first" {
		t.Fatalf("first event: %q %v", sc.Text(), sc.Err())
	}
	wantConcurrencyRefusal(t, c.get(t, "/v1/x", key), "the user's limit of 1 concurrent requests")

	once.Do(func() { close(last) })
	var events []string
	for sc.Scan() {
		if sc.Text() != "" {
			events = append(events, sc.Text())
		}
	}
	if len(events) != 1 || events[0] != "data: last" {
		t.Fatalf("events after the first: %q", events)
	}
	testutil.WaitFor(t, time.Second, func() error {
		if r := c.get(t, "/v1/x", key); r.Status != http.StatusOK {
			return fmt.Errorf("after the stream ended: %d %s", r.Status, r.Body)
		}
		return nil
	})
}

// TestShadowConcurrency: in shadow mode a request past a full cap is
// admitted with {http.rpm.shadow_refused} = CONCURRENCY_EXCEEDED and
// counted in shadow_refusals_total, and it takes no place.
func TestShadowConcurrency(t *testing.T) {
	e, g, c := gatedCaddy(t, "shadow")
	uid, key := e.seedCappedUser(t, c, 100, 1)

	first := goHit(t.Context(), c.URL+"/v1/x", key)
	if h := g.waitArrived(t, 1); h[0] != "" {
		t.Errorf("the first request was marked %q", h[0])
	}
	second := goHit(t.Context(), c.URL+"/v1/x", key)
	if h := g.waitArrived(t, 1); h[0] != "CONCURRENCY_EXCEEDED" {
		t.Errorf("the upstream saw X-Shadow-Refused %q, want CONCURRENCY_EXCEEDED", h[0])
	}
	if held := e.slotsHeld(t, e.keys.UserSlots(uid)); held != 1 {
		t.Errorf("the user's slot set holds %d, want 1: a shadow admission takes no place", held)
	}
	if n := c.metric(t, "caddy_rpm_shadow_refusals_total", `reason="CONCURRENCY_EXCEEDED"`); n != 1 {
		t.Errorf("shadow_refusals_total{reason=CONCURRENCY_EXCEEDED} = %v, want 1", n)
	}
	g.releaseAll()
	wantHit(t, first, http.StatusOK)
	wantHit(t, second, http.StatusOK)
}

// TestConcurrencyKeysFile: with the keys file and no Redis, a user's
// concurrency is enforced in process, with the same answer, and a place
// returns when its response ends.
func TestConcurrencyKeysFile(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.json")
	writeFile(t, keys, `{
  "users": [{"id": 1, "rpm_limit": 100, "concurrency": 1}],
  "api_keys": [{"id": 1, "key": "sk-e2e-conc-file", "user_id": 1}]
}`)
	g := newGate(t)
	defer g.releaseAll()
	c := startCaddy(t, params{KeysFile: keys, Redis: "off", Site: gatedSite(g, "")})
	held := goHit(t.Context(), c.URL+"/v1/x", "sk-e2e-conc-file")
	g.waitArrived(t, 1)
	wantConcurrencyRefusal(t, c.get(t, "/v1/x", "sk-e2e-conc-file"), "the user's limit of 1 concurrent requests")
	if n := c.metric(t, "caddy_rpm_in_flight"); n != 1 {
		t.Errorf("caddy_rpm_in_flight = %v, want 1", n)
	}
	g.releaseAll()
	wantHit(t, held, http.StatusOK)
	// The client may read the whole answer a moment before the handler
	// returns and gives the place back.
	testutil.WaitFor(t, time.Second, func() error {
		if r := c.get(t, "/pass/x", "sk-e2e-conc-file"); r.Status != http.StatusOK {
			return fmt.Errorf("after the response ended: %d %s, want 200", r.Status, r.Body)
		}
		return nil
	})
}

// TestConcurrencyRedisPaused: while Redis does not answer, a request of a
// capped user fails open (admitted, holding no place); a place taken
// before the outage is given back once Redis answers again, long before
// its lease would have expired.
func TestConcurrencyRedisPaused(t *testing.T) {
	srv := redistest.StartServer(t)
	t.Cleanup(srv.Resume) // before the server's own cleanup stops it
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	e := newLimEnvOn(t, rdb)
	g := newGate(t)
	defer g.releaseAll()
	c := e.caddy(t, srv.Addr, fmt.Sprintf("redis_timeout %s\non_redis_error open", failTimeout), gatedSite(g, ""))
	uid, key := e.seedCappedUser(t, c, 100, 1)
	// The snapshot in L1, so that only the limiter needs Redis.
	if r := c.get(t, "/pass/x", key); r.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after the warm-up")

	acquired := time.Now()
	held := goHit(t.Context(), c.URL+"/v1/x", key)
	g.waitArrived(t, 1)
	if n := e.slotsHeld(t, e.keys.UserSlots(uid)); n != 1 {
		t.Fatalf("slot set holds %d, want 1", n)
	}

	srv.Pause()
	open := goHit(t.Context(), c.URL+"/v1/x", key)
	g.waitArrived(t, 1) // admitted past the cap: fail open
	g.releaseAll()
	wantHit(t, held, http.StatusOK)
	wantHit(t, open, http.StatusOK)
	if n := c.metric(t, "caddy_rpm_fail_open_total"); n < 1 {
		t.Errorf("fail_open_total = %v, want the request admitted during the outage", n)
	}
	time.Sleep(time.Second) // the release meets the outage

	srv.Resume()
	resumed := time.Now()
	e.waitSlotsHeld(t, 5*time.Second, e.keys.UserSlots(uid), 0, "after Redis came back")
	t.Logf("place released %v after Redis came back, %v after it was taken (lease %v)",
		time.Since(resumed), time.Since(acquired), limiter.DefaultLease)
	if since := time.Since(acquired); since >= limiter.DefaultLease {
		t.Fatalf("the place went away %v after it was taken: by expiry, not by its release", since)
	}
}

// TestCommandsPerCappedRequest: without reservations, under a
// concurrency cap that is never reached, a request still sends exactly
// one EVALSHA — its places are taken in the same script call as its
// counters — and its release follows asynchronously, at most one ZREM per
// request (fewer when releases share a batch); a renewal tick may add one
// EVALSHA to the measured window.
func TestCommandsPerCappedRequest(t *testing.T) {
	const n = 20
	e, uid, cmds := cappedCommands(t, "reservation_ttl 0", n, 100*time.Millisecond) // the last release is sent 2 ms after its response
	by := commandsByName(cmds)
	if by["evalsha"] < n || by["evalsha"] > n+1 || by["zrem"] < 1 || by["zrem"] > n || len(by) > 2 {
		t.Fatalf("%d requests under a cap sent %v; want %d EVALSHA (+1 renewal at most) and 1..%d ZREM only:%s", n, by, n, n, commandLines(cmds))
	}
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after every response")
}

// TestCommandsPerCappedRequestReserving: with reservations (the
// default), back-to-back requests under a cap that is never reached take
// spare places: far fewer EVALSHA than requests, as for requests without
// a cap (TestCommandsReserving), and next to no ZREM; once the idle spare
// places are handed back the set holds nothing and the counters count
// exactly the requests admitted.
func TestCommandsPerCappedRequestReserving(t *testing.T) {
	const n = 200
	e, uid, cmds := cappedCommands(t, "", n, limiter.DefaultReservationTTL+100*time.Millisecond) // the hand-back
	by := commandsByName(cmds)
	if by["evalsha"] >= n/4 || by["zrem"] > n/50 {
		t.Fatalf("%d requests under a cap sent %v; want fewer than %d EVALSHA and at most %d ZREM:%s", n, by, n/4, n/50, commandLines(cmds))
	}
	e.waitSlotsHeld(t, time.Second, e.keys.UserSlots(uid), 0, "after the spare places were handed back")
	e.wantCount(t, "user", e.keys.User(uid), n+1)
}

// cappedCommands sends n back-to-back requests of a user under a cap of
// 1000 that is never reached, through a Caddy on a private Redis with the
// given global lines, and returns the commands Redis received from the
// first of them until settle after the last.
func cappedCommands(t *testing.T, global string, n int, settle time.Duration) (*limEnv, int64, []cmdCommand) {
	t.Helper()
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	e := newLimEnvOn(t, rdb)
	c := e.caddy(t, srv.Addr, global, "")
	mon := newCmdMonitor(t, srv.Addr)
	uid, key := e.seedCappedUser(t, c, 100000, 1000)
	cmdSettle(t, c)
	redistest.WaitForWindow(t, rdb, 15*time.Second)
	limExpect(t, c, "/v1/x", key, []int{200}, "") // fills the caches

	start := time.Now()
	cmds := mon.count(func() {
		limExpect(t, c, "/v1/x", key, limRepeat(200, n), "")
		time.Sleep(settle)
	})
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("the measure took %v: more than one renewal tick may fall in it", d)
	}
	t.Logf("%d requests under a cap: %v", n, commandsByName(cmds))
	return e, uid, cmds
}

// commandsByName counts commands by name.
func commandsByName(cmds []cmdCommand) map[string]int {
	by := map[string]int{}
	for _, cmd := range cmds {
		by[cmd.name]++
	}
	return by
}

// commandLines lists commands as MONITOR showed them, one per line.
func commandLines(cmds []cmdCommand) string {
	var b strings.Builder
	for _, cmd := range cmds {
		b.WriteString("\n  " + cmd.line)
	}
	return b.String()
}
