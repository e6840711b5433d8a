package caddyrpm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// cfAdapt runs the real Caddyfile adapter on src, named "Caddyfile".
func cfAdapt(t *testing.T, src string) (map[string]any, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter")
	}
	out, _, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("adapted JSON: %v", err)
	}
	return cfg, nil
}

// cfFindHandler returns the first handler object named name in v.
func cfFindHandler(v any, name string) map[string]any {
	switch x := v.(type) {
	case map[string]any:
		if x["handler"] == name {
			return x
		}
		for _, c := range x {
			if h := cfFindHandler(c, name); h != nil {
				return h
			}
		}
	case []any:
		for _, c := range x {
			if h := cfFindHandler(c, name); h != nil {
				return h
			}
		}
	}
	return nil
}

func cfJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad expected JSON: %v", err)
	}
	return m
}

// TestCaddyfileEquivalentJSON adapts a Caddyfile using every option and
// compares the rpm app and handler with their hand-written JSON equivalent.
func TestCaddyfileEquivalentJSON(t *testing.T) {
	cfg, err := cfAdapt(t, `{
	rpm {
		postgres "postgres://u@db:5432/rpm?sslmode=disable"
		auto_migrate
		store_timeout 750ms
		redis redis://r1:6379 redis://r2:6379
		redis_cluster
		redis_timeout 250ms
		on_redis_error closed
		key_prefix gw:
		cache {
			l1_size 1000
			l1_ttl 20s
			l2_ttl 10m
			negative_ttl 5s
			jitter 5%
			stale_if_error 1h
		}
		admin_token s3cret
	}
}
:8080 {
	rpm /v1/* {
		key_header Authorization Bearer
		key_header x-api-key
		key_query key
		keep_credentials
		error_format anthropic
		ratelimit_headers ietf
		zone chat
		limit user 100
		limit key 10
	}
	respond ok
}
`)
	if err != nil {
		t.Fatal(err)
	}
	apps, _ := cfg["apps"].(map[string]any)
	wantApp := cfJSON(t, `{
		"postgres": "postgres://u@db:5432/rpm?sslmode=disable",
		"auto_migrate": true,
		"store_timeout": 750000000,
		"redis": ["redis://r1:6379", "redis://r2:6379"],
		"redis_cluster": true,
		"redis_timeout": 250000000,
		"on_redis_error": "closed",
		"key_prefix": "gw:",
		"cache": {
			"l1_size": 1000,
			"l1_ttl": 20000000000,
			"l2_ttl": 600000000000,
			"negative_ttl": 5000000000,
			"jitter_percent": 5,
			"stale_if_error": 3600000000000
		},
		"admin_token": "s3cret"
	}`)
	if !reflect.DeepEqual(apps["rpm"], any(wantApp)) {
		got, _ := json.Marshal(apps["rpm"])
		t.Errorf("rpm app:\n got %s\nwant the JSON equivalent", got)
	}
	wantHandler := cfJSON(t, `{
		"handler": "rpm",
		"key_sources": [{"header": "Authorization", "scheme": "Bearer"}, {"header": "x-api-key"}],
		"key_query": "key",
		"keep_credentials": true,
		"error_format": "anthropic",
		"ratelimit_headers": "ietf",
		"zone": "chat",
		"limits": [{"scope": "user", "limit": 100}, {"scope": "key", "limit": 10}]
	}`)
	if got := cfFindHandler(apps["http"], "rpm"); !reflect.DeepEqual(got, wantHandler) {
		b, _ := json.Marshal(got)
		t.Errorf("rpm handler:\n got %s\nwant the JSON equivalent", b)
	}
	// The JSON equivalent decodes into the same structs.
	var a1, a2 App
	b1, _ := json.Marshal(apps["rpm"])
	b2, _ := json.Marshal(wantApp)
	if json.Unmarshal(b1, &a1) != nil || json.Unmarshal(b2, &a2) != nil || !reflect.DeepEqual(a1, a2) {
		t.Errorf("app structs differ: %+v vs %+v", a1, a2)
	}

	// A bare directive and a bare global option adapt to empty objects: the
	// defaults are the module's, not the adapter's.
	cfg, err = cfAdapt(t, "{\n\trpm {\n\t\tkeys_file k.json\n\t}\n}\n:8080 {\n\trpm\n\trespond ok\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	apps, _ = cfg["apps"].(map[string]any)
	if got := cfFindHandler(apps["http"], "rpm"); !reflect.DeepEqual(got, map[string]any{"handler": "rpm"}) {
		t.Errorf("bare rpm directive adapts to %v", got)
	}
	if got := apps["rpm"]; !reflect.DeepEqual(got, map[string]any{"keys_file": "k.json"}) {
		t.Errorf("minimal global option adapts to %v", got)
	}
}

// TestCaddyfileErrorsNameTheLine checks that unknown and duplicated
// sub-directives, in the global option, its cache block and the handler
// block, are errors that name the file and line.
func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	global := func(body string) string {
		return "{\n\trpm {\n" + body + "\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	}
	handler := func(body string) string {
		return "{\n\trpm {\n\t\tkeys_file k.json\n\t}\n}\n:8080 {\n\trpm {\n" + body + "\n\t}\n\trespond ok\n}\n"
	}
	cases := []struct {
		name, src string
		line      string // "Caddyfile:<line>"
		mention   string
	}{
		{"global unknown", global("\t\tkeys_file k.json\n\t\tpostgress x"), "Caddyfile:4", "postgress"},
		{"global duplicate", global("\t\tkeys_file k.json\n\t\tkey_prefix a:\n\t\tkey_prefix b:"), "Caddyfile:5", "key_prefix"},
		{"global duplicate flag", global("\t\tkeys_file k.json\n\t\tauto_migrate\n\t\tauto_migrate"), "Caddyfile:5", "auto_migrate"},
		{"global duplicate cache", global("\t\tkeys_file k.json\n\t\tcache {\n\t\t}\n\t\tcache {\n\t\t}"), "Caddyfile:6", "cache"},
		{"global option twice", "{\n\trpm {\n\t\tkeys_file k.json\n\t}\n\trpm {\n\t\tkeys_file k.json\n\t}\n}\n:8080 {\n\trespond ok\n}\n", "Caddyfile:5", "more than once"},
		{"global bad store_timeout", global("\t\tkeys_file k.json\n\t\tstore_timeout soon"), "Caddyfile:4", "store_timeout"},
		{"cache unknown", global("\t\tkeys_file k.json\n\t\tcache {\n\t\t\tl1_ttl 1s\n\t\t\tl3_ttl 1s\n\t\t}"), "Caddyfile:6", "l3_ttl"},
		{"cache duplicate", global("\t\tkeys_file k.json\n\t\tcache {\n\t\t\tl1_ttl 1s\n\t\t\tl1_ttl 2s\n\t\t}"), "Caddyfile:6", "l1_ttl"},
		{"cache bad value", global("\t\tkeys_file k.json\n\t\tcache {\n\t\t\tjitter lots\n\t\t}"), "Caddyfile:5", "jitter"},
		{"handler unknown", handler("\t\terror_format openai\n\t\terrorformat openai"), "Caddyfile:9", "errorformat"},
		{"handler duplicate", handler("\t\terror_format openai\n\t\terror_format problem"), "Caddyfile:9", "error_format"},
		{"handler duplicate flag", handler("\t\tkeep_credentials\n\t\tkeep_credentials"), "Caddyfile:9", "keep_credentials"},
		{"handler duplicate key_query", handler("\t\tkey_query a\n\t\tkey_query b"), "Caddyfile:9", "key_query"},
		{"handler bad format", handler("\t\terror_format xml"), "Caddyfile:8", "xml"},
		{"global key_prefix glob", global("\t\tkeys_file k.json\n\t\tkey_prefix rpm*:"), "Caddyfile:4", "key_prefix"},
		{"global key_prefix hash tag", global("\t\tkeys_file k.json\n\t\tkey_prefix {t}:"), "Caddyfile:4", "key_prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cfAdapt(t, tc.src)
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.src)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.line+" ") && !strings.HasSuffix(msg, tc.line) && !strings.Contains(msg, tc.line+",") {
				t.Errorf("error %q does not name %s", msg, tc.line)
			}
			if !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q", msg, tc.mention)
			}
		})
	}
}
