// Package admin is the admin.api.rpm module: JSON routes on Caddy's admin
// endpoint for RPM status, override management (including "clear all"),
// limit and status changes and auth cache invalidation, plus the admin web
// page. The routes and their answers are listed in SPEC §8; besides those,
// rpm-status reports per_zone (route-limit zones of this instance).
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
func (a *AdminAPI) Provision(caddy.Context) error {
	a.handler = newHandler(activeBackend, caddy.Log().Named("admin.api.rpm"))
	return nil
}

// Routes returns the one route pattern the module serves; dispatching
// happens inside the handler.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/admin/",
		Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			a.handler.ServeHTTP(w, r)
			return nil
		}),
	}}
}

// errNotConfigured reports that the config has no rpm app.
var errNotConfigured = errors.New("rpm app is not configured")

// activeBackend finds the rpm app of the running config.
func activeBackend() (Backend, error) {
	app, err := caddy.ActiveContext().AppIfConfigured("rpm")
	if err != nil {
		if errors.Is(err, caddy.ErrNotConfigured) {
			return nil, errNotConfigured
		}
		return nil, fmt.Errorf("rpm app: %w", err)
	}
	b, ok := app.(Backend)
	if !ok {
		return nil, fmt.Errorf("rpm app %T does not implement admin.Backend", app)
	}
	return b, nil
}

// Interface guards.
var (
	_ caddy.Module      = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
