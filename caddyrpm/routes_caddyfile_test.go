package caddyrpm

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// routeCaddyfile puts block into an rpm handler; the block starts on line 8.
func routeCaddyfile(block string) string {
	return "{\n\trpm {\n\t\tkeys_file keys.json\n\t}\n}\n:8080 {\n\trpm {\n" + block + "\n\t}\n\trespond ok\n}\n"
}

func TestRouteLimitsCaddyfile(t *testing.T) {
	adapted, err := cfAdapt(t, routeCaddyfile("\t\tzone img\n\t\tlimit user 3\n\t\tlimit key 2"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(adapted)
	if err != nil {
		t.Fatal(err)
	}
	// Find the rpm handler in the adapted JSON.
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var found *Handler
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, raw := range r.Handle {
				// The handler may be nested in a subroute.
				s := string(raw)
				i := strings.Index(s, `{"handler":"rpm"`)
				if i < 0 {
					continue
				}
				var h Handler
				if err := json.NewDecoder(strings.NewReader(s[i:])).Decode(&h); err != nil {
					t.Fatal(err)
				}
				found = &h
			}
		}
	}
	if found == nil {
		t.Fatalf("no rpm handler in %s", out)
	}
	want := []RouteLimit{{Scope: "user", Limit: 3}, {Scope: "key", Limit: 2}}
	if found.Zone != "img" || !reflect.DeepEqual(found.Limits, want) {
		t.Fatalf("zone %q limits %+v, want img %+v", found.Zone, found.Limits, want)
	}
	if err := found.checkRoute(); err != nil {
		t.Fatalf("valid limits refused: %v", err)
	}
}

// TestRouteLimitsCaddyfileErrors: every bad route limit is a config error
// that names the problem and the line.
func TestRouteLimitsCaddyfileErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		block string
		want  []string
	}{
		"limit_without_zone":  {"\t\tlimit user 3", []string{"'limit' on line 8 needs a 'zone'", "Caddyfile:"}},
		"limit_zero":          {"\t\tzone img\n\t\tlimit user 0", []string{"at least 1", "Caddyfile:9"}},
		"limit_negative":      {"\t\tzone img\n\t\tlimit key -1", []string{"at least 1", "Caddyfile:9"}},
		"limit_not_a_number":  {"\t\tzone img\n\t\tlimit key many", []string{"at least 1", "Caddyfile:9"}},
		"unknown_scope":       {"\t\tzone img\n\t\tlimit group 3", []string{"must be user or key, not 'group'", "Caddyfile:9"}},
		"duplicate_scope":     {"\t\tzone img\n\t\tlimit user 3\n\t\tlimit key 1\n\t\tlimit user 4", []string{"duplicate limit for scope 'user'", "Caddyfile:11"}},
		"missing_number":      {"\t\tzone img\n\t\tlimit user", []string{"limit takes a scope", "Caddyfile:9"}},
		"extra_argument":      {"\t\tzone img\n\t\tlimit user 3 4", []string{"limit takes a scope", "Caddyfile:9"}},
		"duplicate_zone":      {"\t\tzone img\n\t\tzone txt\n\t\tlimit user 3", []string{"duplicate option 'zone'", "Caddyfile:9"}},
		"bad_zone_name":       {"\t\tzone a/b\n\t\tlimit user 3", []string{"zone 'a/b'", "Caddyfile:8"}},
		"reserved_zone_user":  {"\t\tzone user\n\t\tlimit user 3", []string{"zone 'user' is reserved", "Caddyfile:8"}},
		"reserved_zone_group": {"\t\tlimit key 3\n\t\tzone group", []string{"zone 'group' is reserved", "Caddyfile:9"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cfAdapt(t, routeCaddyfile(tc.block))
			if err == nil {
				t.Fatal("adapted without error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestRouteLimitsJSONValidation: the same rules hold for JSON configs,
// checked at provision time.
func TestRouteLimitsJSONValidation(t *testing.T) {
	for name, tc := range map[string]struct {
		h    Handler
		want string
	}{
		"no_zone":        {Handler{Limits: []RouteLimit{{"user", 3}}}, "needs a zone"},
		"zero":           {Handler{Zone: "img", Limits: []RouteLimit{{"user", 0}}}, "at least 1"},
		"unknown_scope":  {Handler{Zone: "img", Limits: []RouteLimit{{"group", 3}}}, "user or key"},
		"duplicate":      {Handler{Zone: "img", Limits: []RouteLimit{{"key", 3}, {"key", 4}}}, "duplicate"},
		"reserved_zone":  {Handler{Zone: "user", Limits: []RouteLimit{{"key", 3}}}, "reserved"},
		"bad_zone_chars": {Handler{Zone: "a b", Limits: []RouteLimit{{"key", 3}}}, "letters"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.h.checkRoute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
