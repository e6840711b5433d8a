package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/gateway"
)

// Handler serves the admin routes under /admin/. It works with or without
// Caddy: the admin modules make one that finds the rpm app per request,
// and NewHandler makes one around a fixed Core (tests).
//
// Authentication: when there is an admin token, every JSON route (and
// unknown paths) needs "Authorization: Bearer <token>". The web page and
// its assets under /admin/ui are served without it: they hold no data, and
// the page asks for the token and sends it with each API call.
type Handler struct {
	target func() (Core, string, error)
	logger *zap.Logger
	mux    *http.ServeMux
}

// NewHandler returns a handler serving the admin routes over core, with
// the admin token (none if ""); a nil logger discards logs.
func NewHandler(core Core, token string, logger *zap.Logger) *Handler {
	return newHandler(func() (Core, string, error) { return core, token, nil }, logger)
}

func newHandler(target func() (Core, string, error), logger *zap.Logger) *Handler {
	if logger == nil {
		logger = zap.NewNop()
	}
	h := &Handler{target: target, logger: logger, mux: http.NewServeMux()}
	h.routes()
	return h
}

// apiFunc is a route handler with the request's core.
type apiFunc func(w http.ResponseWriter, r *http.Request, c Core) error

// methods maps HTTP methods to the handlers of one path.
type methods map[string]apiFunc

func (h *Handler) routes() {
	h.handle("/admin/users/{id}/rpm-status", methods{http.MethodGet: h.rpmStatus})
	h.handle("/admin/groups/{id}/rpm-overrides", methods{
		http.MethodGet:    h.listOverrides,
		http.MethodPut:    h.replaceOverrides,
		http.MethodDelete: h.clearOverrides,
	})
	h.handle("/admin/users/{uid}/groups/{gid}/rpm-override", methods{http.MethodPut: h.setOverride})
	h.handle("/admin/users/{id}", methods{http.MethodPatch: h.patchUser})
	h.handle("/admin/groups/{id}", methods{http.MethodPatch: h.patchGroup})
	h.handle("/admin/keys/{id}", methods{http.MethodPatch: h.patchKey})
	h.handle("/admin/auth-cache", methods{http.MethodDelete: h.flushCache})
	h.handle("/admin/auth-cache/{kind}/{id}", methods{http.MethodDelete: h.invalidateCache})
}

// handle registers "METHOD path" patterns, so the mux answers a wrong
// method with 405 and an Allow header (GET brings HEAD), and an OPTIONS
// pattern answering 204 with the same Allow.
func (h *Handler) handle(path string, ms methods) {
	allowed := []string{http.MethodOptions}
	for m, fn := range ms {
		allowed = append(allowed, m)
		if m == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
		h.mux.Handle(m+" "+path, apiHandler(fn))
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	h.mux.HandleFunc(http.MethodOptions+" "+path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		w.WriteHeader(http.StatusNoContent)
	})
}

// apiHandler is an apiFunc as the mux takes it: the request's core comes
// in, and its error goes out, through the call in the context.
type apiHandler apiFunc

// routeCall is one request's core and the error its route handler returned.
type routeCall struct {
	core Core
	err  error
}

type callKey struct{}

func (fn apiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := r.Context().Value(callKey{}).(*routeCall)
	c.err = fn(w, r, c.core)
}

// requestTimeout bounds the store and Redis calls of one admin request, so
// that a database which stops answering gets a 504 rather than a request
// that hangs.
const requestTimeout = 10 * time.Second

// errNotConfigured reports that the config has no rpm app.
var errNotConfigured = errors.New("rpm app is not configured")

// ServeHTTP implements http.Handler: errors are answered as Caddy's admin
// endpoint answers them.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		writeAPIError(w, err)
	}
}

// serve answers r or returns the error to answer (a caddy.APIError).
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Path == "/admin/ui" || strings.HasPrefix(r.URL.Path, "/admin/ui/") {
		// The page and its assets: no token, see the type's doc comment.
		serveUI(w, r)
		return nil
	}
	w.Header().Set("Cache-Control", "no-store")
	core, token, err := h.target()
	if err != nil {
		if !errors.Is(err, errNotConfigured) {
			h.logger.Error("find rpm app", zap.Error(err))
		}
		return apiError(http.StatusServiceUnavailable, errNotConfigured.Error())
	}
	if !authorized(r, token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="caddy-rpm admin"`)
		return apiError(http.StatusUnauthorized, "missing or invalid admin token")
	}
	if mh, pattern := h.mux.Handler(r); pattern == "" {
		return unrouted(w, r, mh)
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	c := &routeCall{core: core}
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(ctx, callKey{}, c)))
	return c.err
}

// unrouted is the answer to a request no pattern matches: 404, or 405 with
// the Allow header the mux computes when the path has other methods; mh
// is the mux's own (text) answer.
func unrouted(w http.ResponseWriter, r *http.Request, mh http.Handler) error {
	probe := &headerProbe{header: http.Header{}}
	mh.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		allow := probe.header.Get("Allow")
		w.Header().Set("Allow", allow)
		return apiError(http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; allowed: "+allow)
	}
	return apiError(http.StatusNotFound, "no such admin route: "+r.URL.Path)
}

// headerProbe records the status and headers of the mux's own text answer
// to an unrouted request and drops its body, so it can be answered as JSON.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header         { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *headerProbe) WriteHeader(status int)      { p.status = status }

// authorized reports whether r carries the admin token (or none is needed).
// Every Authorization header is looked at: behind a site's basic_auth the
// request carries "Basic …" for the site and "Bearer <token>" for us.
func authorized(r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	for _, v := range r.Header.Values("Authorization") {
		got, ours := gateway.Credential(v, "Bearer")
		if ours && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
			return true
		}
	}
	return false
}
