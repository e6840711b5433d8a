package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// reloadSite is a site whose only change between versions is a response
// header, so a reload really swaps the config.
func reloadSite(version string) string {
	return "header X-Config " + version + "\n\trpm\n\treverse_proxy {{.Upstream}}"
}

// TestReloadUnderLoad: `caddy reload` while requests flow fails no request
// and resets no counter — for the in-process limiter (keys file) and for
// Redis with Postgres.
func TestReloadUnderLoad(t *testing.T) {
	t.Run("in-process", func(t *testing.T) {
		// demo key: user 1, group override 10 per minute.
		testReloadUnderLoad(t, params{KeysFile: demoKeysPath(t), Redis: "off"}, "sk-demo-caddy-rpm-key", 10, nil)
	})
	t.Run("postgres+redis", func(t *testing.T) {
		pool, dsn := storetest.NewSchema(t)
		uid := storetest.SeedUser(t, pool, 10)
		_, key := storetest.SeedKey(t, pool, uid, nil)
		rdb, prefix := redistest.Shared(t)
		testReloadUnderLoad(t, params{DSN: dsn, Prefix: prefix}, key, 10,
			func() { redistest.WaitForWindow(t, rdb, 25*time.Second) })
	})
}

func testReloadUnderLoad(t *testing.T, p params, key string, limit int, align func()) {
	up := newUpstream(t)
	p.Upstream, p.Site = up.URL, reloadSite("v1")
	c := startCaddy(t, p)
	if align != nil {
		align()
	} else {
		redistest.WaitForLocalWindow(t, 25*time.Second)
	}

	// Use half the limit before the reloads.
	for i := 0; i < limit/2; i++ {
		if r := c.get(t, "/", key); r.Status != 200 {
			t.Fatalf("request %d before reload: %d %s", i+1, r.Status, r.Body)
		}
	}

	// Keyless requests flow during the reloads (the plugin answers them
	// with 401, so the counter is only touched by us). Caddy itself resets
	// a few connections while the old config's server closes its listening
	// socket — with or without this plugin (checked with a plain
	// reverse_proxy config): connections queued on that socket get a RST.
	// Like any client behind a reloading proxy, a request whose connection
	// breaks is retried (a few times, 20 ms apart); a request that never
	// gets an answer, or any answer but 401, fails the test.
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var resets atomic.Int64
	get := func() (*http.Response, error) {
		var lastErr error
		for range 5 {
			resp, err := fresh.Get(c.URL + "/")
			if err == nil {
				return resp, nil
			}
			resets.Add(1)
			lastErr = err
			time.Sleep(20 * time.Millisecond)
		}
		return nil, lastErr
	}
	var stop atomic.Bool
	var failures, answered atomic.Int64
	var firstFailure atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				resp, err := get()
				if err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
				}
				answered.Add(1)
			}
		}()
	}
	for _, v := range []string{"v2", "v3", "v4"} {
		p.Site = reloadSite(v)
		c.reload(t, p)
		testutil.WaitFor(t, 5*time.Second, func() error {
			if got := c.get(t, "/none", "").Header.Get("X-Config"); got != v {
				return fmt.Errorf("X-Config %q, want %q", got, v)
			}
			return nil
		})
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed during the reloads; first: %v", n, answered.Load(), firstFailure.Load())
	}
	if answered.Load() == 0 {
		t.Fatal("no request was answered during the reloads")
	}
	t.Logf("%d requests answered during 3 reloads; %d connection resets retried", answered.Load(), resets.Load())

	// The counter survived: exactly limit - limit/2 more are admitted.
	admitted := 0
	for i := 0; i < limit; i++ {
		r := c.get(t, "/", key)
		switch r.Status {
		case 200:
			admitted++
		case 429:
		default:
			t.Fatalf("after reload: %d %s", r.Status, r.Body)
		}
	}
	if want := limit - limit/2; admitted != want {
		t.Fatalf("%d admitted after the reloads, want %d: the counter was reset", admitted, want)
	}
	if strings.Contains(c.Logs(), "panic") {
		t.Fatalf("panic in logs:\n%s", c.Logs())
	}
}
