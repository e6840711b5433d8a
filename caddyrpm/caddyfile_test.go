package caddyrpm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
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

// TestCaddyfileAdapts compares what each testdata/adapt/<name>.caddyfile
// adapts to with <name>.json: all-options uses every option of the global
// option and the directive; bare shows that a bare directive and a minimal
// global option adapt to (nearly) empty objects, the defaults being the
// modules', not the adapter's; reservations-off that `reservations off`
// is kept in the JSON as false.
func TestCaddyfileAdapts(t *testing.T) {
	inputs, err := filepath.Glob("testdata/adapt/*.caddyfile")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no adapt cases: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(in, ".caddyfile") + ".json")
			if err != nil {
				t.Fatal(err)
			}
			caddytest.AssertAdapt(t, string(src), "caddyfile", string(want))
		})
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
		{"global short concurrency_lease", global("\t\tkeys_file k.json\n\t\tconcurrency_lease 500ms"), "Caddyfile:4", "concurrency_lease must be at least 1s"},
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

// TestCaddyfileReservationTTL: reservation_ttl takes a duration, 0 or off
// (both 0: reservations off), and refuses anything else.
func TestCaddyfileReservationTTL(t *testing.T) {
	src := func(v string) string {
		return "{\n\trpm {\n\t\tkeys_file k.json\n\t\treservation_ttl " + v + "\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	}
	for v, want := range map[string]float64{"100ms": 100e6, "0": 0, "off": 0} {
		cfg, err := cfAdapt(t, src(v))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		rpm := cfg["apps"].(map[string]any)["rpm"].(map[string]any)
		got, ok := rpm["reservation_ttl"].(float64)
		if !ok || got != want {
			t.Errorf("reservation_ttl %s adapts to %v, want %v", v, rpm["reservation_ttl"], want)
		}
	}
	for _, v := range []string{"soon", "-1s"} {
		if _, err := cfAdapt(t, src(v)); err == nil || !strings.Contains(err.Error(), "reservation_ttl") {
			t.Errorf("reservation_ttl %s: error %v", v, err)
		}
	}
}

// TestCaddyfileReservations: reservations takes on or off; anything else,
// and reservations on with reservation_ttl 0 (in either order), are
// errors that name their line.
func TestCaddyfileReservations(t *testing.T) {
	src := func(lines string) string {
		return "{\n\trpm {\n\t\tkeys_file k.json\n" + lines + "\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	}
	for v, want := range map[string]bool{"on": true, "off": false} {
		cfg, err := cfAdapt(t, src("\t\treservations "+v))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		rpm := cfg["apps"].(map[string]any)["rpm"].(map[string]any)
		if got, ok := rpm["reservations"].(bool); !ok || got != want {
			t.Errorf("reservations %s adapts to %v, want %v", v, rpm["reservations"], want)
		}
	}
	for lines, wantErr := range map[string]string{
		"\t\treservations maybe":                         "Caddyfile:4",
		"\t\treservations":                               "Caddyfile:4",
		"\t\treservations on\n\t\treservation_ttl 0":     "Caddyfile:5",
		"\t\treservation_ttl off\n\t\treservations on":   "Caddyfile:5",
		"\t\treservations off\n\t\treservation_ttl soon": "Caddyfile:5",
	} {
		_, err := cfAdapt(t, src(lines))
		if err == nil || !strings.Contains(err.Error(), wantErr) || !strings.Contains(err.Error(), "reservation") {
			t.Errorf("%q: error %v, want one naming %s", lines, err, wantErr)
		}
	}
	if _, err := cfAdapt(t, src("\t\treservations off\n\t\treservation_ttl 0")); err != nil {
		t.Errorf("reservations off with reservation_ttl 0: %v", err)
	}
}
