// Package admin is the admin.api.rpm module: JSON routes on Caddy's admin
// endpoint for RPM status, override management (including "clear all"),
// limit and status changes and auth cache invalidation, plus the admin web
// page; and the rpm_admin handler serving the same on a site. It is an
// HTTP adapter over the gateway (Core): the rules, the writes and the
// invalidations they need are the gateway's.
package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the admin.api.rpm module: it serves the RPM admin routes and
// the admin web page under /admin/ on Caddy's admin endpoint.
//
// Admin modules get no configuration and are provisioned before the apps,
// so the rpm app is looked up on every request through the active context.
type AdminAPI struct {
	handler *Handler
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.rpm",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision sets up the handler.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.handler = newHandler(activeApp, ctx.Logger(a))
	return nil
}

// Routes returns the one route pattern the module serves; the handler
// routes within it. Errors go back to Caddy, which answers them as
// {"error": "<message>"} and logs them.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/admin/",
		Handler: caddy.AdminHandlerFunc(a.handler.serve),
	}}
}

// activeApp finds the rpm app of the running config.
func activeApp() (Core, string, error) {
	app, err := caddy.ActiveContext().AppIfConfigured("rpm")
	if err != nil {
		if errors.Is(err, caddy.ErrNotConfigured) {
			return nil, "", errNotConfigured
		}
		return nil, "", fmt.Errorf("rpm app: %w", err)
	}
	a, ok := app.(App)
	if !ok {
		return nil, "", fmt.Errorf("rpm app %T does not implement admin.App", app)
	}
	return a.Gateway(), a.AdminToken(), nil
}

// Interface guards.
var (
	_ caddy.Module      = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ http.Handler      = (*Handler)(nil)
)
