package rpm

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// The root package registers the modules of both packages: the
// directive order of rpm (caddyrpm) and rpm_admin (admin) is checked here,
// with both registered as users' builds register them.

// TestDirectiveOrder adapts a site whose directives are written in the
// opposite order of execution: the adapter puts rpm before basic_auth, and
// rpm_admin after basic_auth and forward_auth, so the site's own
// authentication applies to the admin page and API.
func TestDirectiveOrder(t *testing.T) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`{
	rpm {
		keys_file k.json
		admin_token t
	}
}
:8080 {
	rpm_admin
	forward_auth 127.0.0.1:9 {
		uri /auth
	}
	basic_auth {
		op $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
	rpm
	respond ok
}`), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("adapted JSON: %v", err)
	}
	servers := cfg["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)
	var order []string
	for _, srv := range servers {
		for _, route := range srv.(map[string]any)["routes"].([]any) {
			order = append(order, routeHandlers(route)...)
		}
	}
	// forward_auth adapts to a reverse_proxy handler, basic_auth to
	// authentication.
	want := []string{"rpm", "authentication", "reverse_proxy", "rpm_admin", "static_response"}
	if !slices.Equal(order, want) {
		t.Fatalf("handlers run in the order %v, want %v", order, want)
	}
}

// routeHandlers lists the handler names of a route in execution order,
// descending into subroutes.
func routeHandlers(route any) []string {
	var out []string
	for _, h := range route.(map[string]any)["handle"].([]any) {
		h := h.(map[string]any)
		if h["handler"] != "subroute" {
			out = append(out, h["handler"].(string))
			continue
		}
		for _, r := range h["routes"].([]any) {
			out = append(out, routeHandlers(r)...)
		}
	}
	return out
}
