package admin

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// uiFiles holds the admin web page: plain HTML, CSS and JavaScript with no
// build step and no external assets. index.html loads its script and style
// with crossorigin: Caddy's admin endpoint rejects no-cors requests, which a
// plain <script src> or stylesheet link would be.
//
//go:embed ui
var uiFiles embed.FS

// uiCSP allows only the page's own files and same-origin API calls; no inline
// script or style, no framing.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiHandler serves the admin web page: index.html at .../ui and its
// assets at .../ui/<file>. It works whether or not a prefix was stripped
// from the path, and it does not check the admin token: the page asks for
// the token itself and sends it with every JSON call.
func uiHandler() http.Handler {
	return http.HandlerFunc(serveUI)
}

// uiRoot is the page's files at the root of a file system.
var uiRoot, _ = fs.Sub(uiFiles, "ui")

func serveUI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	// One canonical page address: .../ui. The page's relative links (ui/app.js
	// and the JSON routes beside ui) depend on it.
	if strings.HasSuffix(p, "/ui/") || strings.HasSuffix(p, "/ui/index.html") {
		http.Redirect(w, r, strings.TrimSuffix(strings.TrimSuffix(p, "index.html"), "/"), http.StatusMovedPermanently)
		return
	}
	name := path.Base(p)
	if name == "ui" || name == "/" || name == "." {
		name = "index.html"
	}
	if st, err := fs.Stat(uiRoot, name); err != nil || st.IsDir() {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Caddy's admin endpoint checks the Origin, or failing that the Referer,
	// of every browser request (they carry Sec-Fetch-Mode). Same-origin GETs
	// have no Origin, so the page's own asset loads and API reads pass only
	// with a Referer; "same-origin" sends it to this endpoint and nowhere else.
	h.Set("Referrer-Policy", "same-origin")
	// Content type by extension (text/html, text/javascript, text/css, each
	// with charset=utf-8), HEAD and ranges as net/http serves files.
	http.ServeFileFS(w, r, uiRoot, name)
}
