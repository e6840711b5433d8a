package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Handler serves the admin routes under /admin/. It works with or without
// Caddy: the admin.api.rpm module mounts one that finds the rpm app per
// request, and NewHandler makes one around a fixed Backend (tests).
//
// Authentication: when the backend has an admin token, every JSON route
// (and unknown paths) needs "Authorization: Bearer <token>". The web page
// and its assets under /admin/ui are served without it: they hold no data,
// and the page asks for the token and sends it with each API call.
type Handler struct {
	backend func() (Backend, error)
	logger  *zap.Logger
	mux     *http.ServeMux
	ui      http.Handler

	clears    singleflight.Group
	clearRuns atomic.Int64
}

// NewHandler returns a handler serving the admin routes for b; a nil
// logger discards logs.
func NewHandler(b Backend, logger *zap.Logger) *Handler {
	return newHandler(func() (Backend, error) { return b, nil }, logger)
}

func newHandler(backend func() (Backend, error), logger *zap.Logger) *Handler {
	if logger == nil {
		logger = zap.NewNop()
	}
	h := &Handler{backend: backend, logger: logger, mux: http.NewServeMux(), ui: uiHandler()}
	h.routes()
	return h
}

// ClearRuns reports how many times "clear all" ran its store delete; calls
// collapsed into one in flight count once.
func (h *Handler) ClearRuns() int64 { return h.clearRuns.Load() }

// apiFunc is a route handler with the request's backend.
type apiFunc func(w http.ResponseWriter, r *http.Request, b Backend)

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
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such admin route: "+r.URL.Path)
	})
}

// handle registers the path with a method dispatcher, so a wrong method
// answers 405 with an Allow header and a JSON error.
func (h *Handler) handle(path string, ms methods) {
	if get, ok := ms[http.MethodGet]; ok {
		ms[http.MethodHead] = get
	}
	allowed := make([]string, 0, len(ms)+1)
	for m := range ms {
		allowed = append(allowed, m)
	}
	allowed = append(allowed, http.MethodOptions)
	sort.Strings(allowed)
	allow := strings.Join(allowed, ", ")

	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.Header().Set("Allow", allow)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fn, ok := ms[r.Method]
		if !ok {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; allowed: "+allow)
			return
		}
		fn(w, r, r.Context().Value(backendKey{}).(Backend))
	})
}

type backendKey struct{}

// requestTimeout bounds the store and Redis calls of one admin request, so
// that a database which stops answering gets a 504 rather than a request
// that hangs.
const requestTimeout = 10 * time.Second

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/admin/ui" || strings.HasPrefix(r.URL.Path, "/admin/ui/") {
		// The page and its assets: no token, see the type's doc comment.
		h.ui.ServeHTTP(w, r)
		return
	}
	b, err := h.backend()
	if err != nil {
		if !errors.Is(err, errNotConfigured) {
			h.logger.Error("find rpm app", zap.Error(err))
		}
		writeError(w, http.StatusServiceUnavailable, errNotConfigured.Error())
		return
	}
	if !authorized(r, b.AdminToken()) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="caddy-rpm admin"`)
		writeError(w, http.StatusUnauthorized, "missing or invalid admin token")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	h.mux.ServeHTTP(w, r.WithContext(context.WithValue(ctx, backendKey{}, b)))
}

// authorized reports whether r carries the admin token (or none is needed).
// Every Authorization header is looked at: behind a site's basic_auth the
// request carries "Basic …" for the site and "Bearer <token>" for us.
func authorized(r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	for _, v := range r.Header.Values("Authorization") {
		if got, ok := bearer(v); ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 {
			return true
		}
	}
	return false
}

// bearer extracts the credentials of a "Bearer <token>" header value.
func bearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(v[len(scheme):])
	return tok, tok != ""
}
