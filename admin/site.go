package admin

import (
	"errors"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(SiteHandler{})
	httpcaddyfile.RegisterHandlerDirective("rpm_admin", parseSiteHandler)
	// After every directive of the standard order that authenticates
	// (basicauth, basic_auth, forward_auth), so a site's own authentication
	// applies to the admin page and API first; the admin token is required
	// on top. The rpm directive is ordered before basic_auth, so on a site
	// with both, rpm sees the admin paths first unless matched away.
	httpcaddyfile.RegisterDirectiveOrder("rpm_admin", httpcaddyfile.After, "forward_auth")
}

// SiteHandler serves the same admin routes and page under /admin/ on a
// regular site. Caddy's admin endpoint refuses a browser's top-level
// navigation (it carries no Origin), so operators who want to open the page
// by typing its address mount it on a site instead. It requires the rpm
// app's admin_token, since a site is reachable from outside, and runs after
// the site's basic_auth and forward_auth.
//
// Requests outside /admin/ pass to the next handler.
type SiteHandler struct {
	handler *Handler
}

// CaddyModule returns the Caddy module information.
func (SiteHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rpm_admin",
		New: func() caddy.Module { return new(SiteHandler) },
	}
}

// Provision finds the rpm app and refuses to run without an admin token.
func (s *SiteHandler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("rpm")
	if err != nil {
		return err
	}
	a, ok := app.(App)
	if !ok {
		return errors.New("rpm app does not implement admin.App")
	}
	if a.AdminToken() == "" {
		return errors.New("rpm_admin serves the admin API on a site: set admin_token or admin_token_file in the rpm global option")
	}
	s.handler = NewHandler(a.Gateway(), a.AdminToken(), ctx.Logger(s))
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (s *SiteHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !strings.HasPrefix(r.URL.Path, "/admin/") && r.URL.Path != "/admin" {
		return next.ServeHTTP(w, r)
	}
	s.handler.ServeHTTP(w, r)
	return nil
}

// parseSiteHandler parses the rpm_admin directive, which takes no options:
//
//	rpm_admin [<matcher>]
func parseSiteHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() || h.NextBlock(0) {
		return nil, h.Err("rpm_admin takes no arguments or options")
	}
	return new(SiteHandler), nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*SiteHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*SiteHandler)(nil)
)
