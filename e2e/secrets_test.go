package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// TestSecretsNeverLeak runs Caddy with debug and access logs, sends valid,
// refused and unknown keys in every key source, and then looks for each raw
// key in every log line and in every Redis key and value of the test prefix.
//
// Caddy's access log records the request headers as they arrived (it clones
// the request before any handler runs) and redacts only Authorization,
// Proxy-Authorization and cookies; no handler can remove another header from
// it. Key headers other than Authorization are therefore filtered in the log
// config, as the README tells operators to do.
func TestSecretsNeverLeak(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	uid := storetest.SeedUser(t, pool, 1) // 1 rpm: the second request is a 429
	gid := storetest.SeedGroup(t, pool, "secrets", 0)
	_, good := storetest.SeedKey(t, pool, uid, &gid)
	_, other := storetest.SeedKey(t, pool, uid, &gid)
	disabled := authKeyWith(t, pool, uid, &gid, "status = 'disabled'")
	unknown := "sk-unknown-" + randomID() + randomID()
	rdb, prefix := redistest.Shared(t)
	up := newUpstream(t)
	c := startCaddy(t, params{Options: "debug", DSN: dsn, Prefix: prefix, Upstream: up.URL, Site: `log {
		format filter {
			wrap json
			request>headers>X-Api-Key delete
			request>headers>Api-Key delete
		}
	}
	rpm {
		key_header Authorization Bearer
		key_header X-Api-Key
		key_header Api-Key
	}
	reverse_proxy {{.Upstream}}`})
	redistest.WaitForWindow(t, rdb, 10*time.Second)

	for _, k := range []string{good, other, disabled, unknown} {
		for _, h := range []string{"Authorization: Bearer " + k, "X-Api-Key: " + k, "Api-Key: " + k} {
			c.do(t, http.MethodGet, "/v1/models", h)
		}
	}
	// A request that carries the key twice, and one refused for being
	// malformed (it still contains the key).
	c.do(t, http.MethodGet, "/v1/models", "X-Api-Key: "+good, "X-Api-Key: "+unknown)
	c.do(t, http.MethodGet, "/v1/models", "Authorization: Bearer "+good+" trailing")
	if n := c.metric(t, "caddy_rpm_decisions_total", `reason="USER_RPM_EXCEEDED"`); n < 1 {
		t.Fatalf("no 429 was exercised")
	}
	if n := c.metric(t, "caddy_rpm_decisions_total", `result="admitted"`); n < 1 {
		t.Fatalf("no request was admitted")
	}

	time.Sleep(300 * time.Millisecond) // let the access log lines land
	logs := c.Logs()
	if !strings.Contains(logs, `"logger":"http.log.access`) {
		t.Fatalf("no access log lines; the test would prove nothing:\n%s", logs)
	}
	if !strings.Contains(logs, `"level":"debug"`) {
		t.Fatalf("no debug log lines; the test would prove nothing")
	}
	for _, k := range []string{good, other, disabled, unknown} {
		for i, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, k) {
				t.Errorf("raw key in log line %d: %s", i+1, line)
			}
		}
	}

	ctx := context.Background()
	keys, err := redistest.ScanKeys(ctx, rdb, prefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 3 {
		t.Fatalf("only %d Redis keys under the prefix: %v", len(keys), keys)
	}
	for _, rk := range keys {
		var values []string
		switch typ := rdb.Type(ctx, rk).Val(); typ {
		case "string":
			values = append(values, rdb.Get(ctx, rk).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, rk).Val() {
				values = append(values, f, v)
			}
		case "none": // expired meanwhile
		default:
			t.Errorf("unexpected Redis type %s of %s", typ, rk)
		}
		for _, k := range []string{good, other, disabled, unknown} {
			if strings.Contains(rk, k) {
				t.Errorf("raw key in Redis key %q", rk)
			}
			for _, v := range values {
				if strings.Contains(v, k) {
					t.Errorf("raw key in Redis value of %s", rk)
				}
			}
		}
	}
}
