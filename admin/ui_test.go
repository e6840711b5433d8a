package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// uiChromiumPath is where Debian installs Chromium; CI installs it there.
const uiChromiumPath = "/usr/bin/chromium"

func TestUIHandlerServesFiles(t *testing.T) {
	srv := httptest.NewServer(uiMux(nil))
	defer srv.Close()

	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/admin/ui", "text/html; charset=utf-8", `<script src="ui/app.js"`},
		{"/admin/ui/app.js", "text/javascript; charset=utf-8", "clear-all"},
		{"/admin/ui/style.css", "text/css; charset=utf-8", ".message"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", tc.path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", tc.path, got)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: weak CSP %q", tc.path, csp)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
	}

	// The page must not need anything the CSP forbids.
	html, _ := uiFiles.ReadFile("ui/index.html")
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script>|<style|\sstyle=|\son[a-z]+=`), // inline code
		regexp.MustCompile(`(src|href)="(https?:)?//`),             // external assets
	} {
		if m := bad.FindString(string(html)); m != "" {
			t.Errorf("index.html contains %q (inline code or external asset)", m)
		}
	}
}

func TestUIHandlerRejects(t *testing.T) {
	srv := httptest.NewServer(uiMux(nil))
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	check := func(method, path string, want int) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
		}
		return resp
	}
	check(http.MethodGet, "/admin/ui/missing.js", http.StatusNotFound)
	check(http.MethodGet, "/admin/ui/ui.go", http.StatusNotFound)
	check(http.MethodGet, "/admin/ui/..%2fui.go", http.StatusNotFound)
	check(http.MethodHead, "/admin/ui", http.StatusOK)
	if resp := check(http.MethodPost, "/admin/ui", http.StatusMethodNotAllowed); resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("405 without Allow header")
	}
	if resp := check(http.MethodGet, "/admin/ui/", http.StatusMovedPermanently); resp.Header.Get("Location") != "/admin/ui" {
		t.Errorf("redirect to %q, want /admin/ui", resp.Header.Get("Location"))
	}
}

// TestUIBrowser drives the page in headless Chromium against a fake JSON API.
// The end-to-end test through Caddy, Postgres and Redis lives in e2e/.
func TestUIBrowser(t *testing.T) {
	if _, err := os.Stat(uiChromiumPath); err != nil {
		t.Skipf("skipping browser test: %s not found (apt-get install chromium)", uiChromiumPath)
	}
	if testing.Short() {
		t.Skip("skipping browser test in -short mode")
	}

	api := newUIFakeAPI()
	srv := httptest.NewServer(uiMux(api))
	defer srv.Close()

	b := newUIBrowser(t)
	shots := b.shots
	t.Logf("screenshots in %s", shots)

	b.do(chromedp.Navigate(srv.URL + "/admin/ui"))
	b.waitJS(`document.getElementById('lookup') !== null`)
	b.shot("00-empty")

	t.Run("lookup", func(t *testing.T) {
		b.t = t
		b.typeInto("#user-id", "42")
		b.click("#lookup")
		b.waitJS(`document.getElementById('user-used').textContent === '7'`)
		b.expectText("#user-limit", "60")
		b.expectText(`#per-group tr[data-group-id="1"] td.limit`, "30")
		b.expectText(`#per-group tr[data-group-id="2"] td.limit`, "unlimited")
		b.expectText(`#per-group tr[data-group-id="2"] td.source`, "override")
		b.expectText(`#per-group tr[data-group-id="2"] td:nth-child(2)`, "premium")
		b.expectText(`#per-zone tr[data-zone="expensive"] td.used`, "2")
		b.expectText(`#per-zone tr[data-zone="bulk"] td.used`, "per key")

		// The countdown ticks down each second from window_resets_in.
		first := b.countdown()
		if first < 40 || first > 50 {
			t.Errorf("countdown %d s, want about 50", first)
		}
		b.shot("01-lookup")
		time.Sleep(2200 * time.Millisecond)
		if d := first - b.countdown(); d < 1 || d > 3 {
			t.Errorf("countdown went down by %d s in 2.2 s", d)
		}

		// Auto-refresh every 3 s picks up new numbers without a click.
		api.setUserUsed(9)
		b.waitJS(`document.getElementById('user-used').textContent === '9'`)
		if n := api.count("GET status"); n < 2 {
			t.Errorf("status fetched %d times, want refreshes", n)
		}
	})

	t.Run("save", func(t *testing.T) {
		b.t = t
		b.typeInto("#group-id", "7")
		b.click("#open-group")
		b.waitJS(`document.querySelectorAll('#overrides tr').length === 2`)
		b.expectValue(`#overrides tr[data-user-id="5"] input.override-value`, "10")

		b.typeInto(`#overrides tr[data-user-id="5"] input.override-value`, "15")
		b.typeInto(`#overrides tr[data-user-id="6"] input.override-value`, "0")
		b.click("#add-row")
		b.typeInto(`#overrides tr:last-child input.user-id-value`, "8")
		b.typeInto(`#overrides tr:last-child input.override-value`, "25")
		b.shot("02-edited")
		b.click("#save")
		b.waitJS(`document.getElementById('message').textContent.includes('Saved 3 overrides')`)

		want := []uiEntry{{5, uiPtr(15)}, {6, uiPtr(0)}, {8, uiPtr(25)}}
		if got := api.lastPut(7); !reflect.DeepEqual(got, want) {
			t.Errorf("PUT body entries %s, want %s", uiJSON(got), uiJSON(want))
		}
		// The list is reloaded from the server.
		b.waitJS(`document.querySelectorAll('#overrides tr').length === 3`)
		b.expectValue(`#overrides tr[data-user-id="8"] input.override-value`, "25")
		b.shot("03-saved")
	})

	t.Run("clear all", func(t *testing.T) {
		b.t = t
		before := api.count("DELETE")
		b.doubleClick("#clear-all")

		// Read the state while the DELETE is still in flight (the fake sleeps 1.5 s).
		type btnState struct {
			Disabled bool   `json:"disabled"`
			Text     string `json:"text"`
			Busy     string `json:"busy"`
			Loading  bool   `json:"loading"`
		}
		var st btnState
		b.eval(`(() => { const b = document.getElementById('clear-all');
			return {disabled: b.disabled, text: b.textContent, busy: b.getAttribute('aria-busy') || '',
				loading: b.classList.contains('loading')}; })()`, &st)
		if !st.Disabled || st.Text != "Clearing…" || st.Busy != "true" || !st.Loading {
			t.Errorf("during the call: button %+v, want disabled, \"Clearing…\", aria-busy, .loading", st)
		}
		for deadline := time.Now().Add(time.Second); api.inFlight() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := api.inFlight(); n != 1 {
			t.Errorf("%d DELETEs in flight, want 1", n)
		}
		var others []bool
		b.eval(`['save', 'add-row'].map(id => document.getElementById(id).disabled)`, &others)
		if !reflect.DeepEqual(others, []bool{true, true}) {
			t.Errorf("save, add-row disabled = %v during the clear, want both true", others)
		}
		b.shot("04-clearing")
		time.Sleep(500 * time.Millisecond)
		b.click("#clear-all") // a third click, still in flight: ignored
		b.eval(`document.getElementById('clear-all').disabled`, &st.Disabled)
		if !st.Disabled {
			t.Errorf("button enabled again before the DELETE answered")
		}

		b.waitJS(`document.getElementById('message').textContent.includes('Cleared 3 overrides')`)
		b.waitJS(`!document.getElementById('clear-all').disabled`)
		b.expectText("#clear-all", "Clear all")
		var rows int
		b.eval(`document.querySelectorAll('#overrides tr').length`, &rows)
		if rows != 0 {
			t.Errorf("%d override rows after clear, want 0", rows)
		}
		if n := api.count("DELETE") - before; n != 1 {
			t.Errorf("%d DELETE requests for a double click, want exactly 1", n)
		}
		b.shot("05-cleared")
	})

	t.Run("errors", func(t *testing.T) {
		b.t = t
		// 409 from the read-only keys_file store.
		b.typeInto("#group-id", "9")
		b.click("#open-group")
		b.waitJS(`document.querySelectorAll('#overrides tr').length === 1`)
		b.click("#save")
		b.waitJS(`document.getElementById('message').textContent.includes('read-only')`)
		msg := b.text("#message")
		if !strings.Contains(msg, uiFakeReadOnly) || !strings.Contains(msg, "Edit the keys file") {
			t.Errorf("409 message %q", msg)
		}
		b.expectVisible("#message")
		b.shot("06-conflict")

		// 400 with the server's reason.
		b.typeInto("#group-id", "7")
		b.click("#open-group")
		b.waitJS(`document.getElementById('group-label').textContent === '7'`)
		b.click("#add-row")
		b.typeInto(`#overrides tr:last-child input.user-id-value`, "3")
		b.typeInto(`#overrides tr:last-child input.override-value`, "-1")
		b.click("#save")
		b.waitJS(`document.getElementById('message').textContent.startsWith('Invalid input: ')`)
		if msg := b.text("#message"); !strings.Contains(msg, "rpm_override must be >= 0") {
			t.Errorf("400 message %q", msg)
		}

		// 404 and a network failure.
		b.typeInto("#user-id", "404")
		b.click("#lookup")
		b.waitJS(`document.getElementById('message').textContent.startsWith('Not found')`)
		b.typeInto("#user-id", "500")
		b.click("#lookup")
		b.waitJS(`document.getElementById('message').textContent.startsWith('Cannot reach the admin API')`)
		b.shot("07-network")
	})

	t.Run("token", func(t *testing.T) {
		b.t = t
		// A fresh page, so that no refresh of an earlier user races the lookup.
		b.do(chromedp.Navigate(srv.URL + "/admin/ui"))
		b.waitJS(`document.getElementById('lookup') !== null`)
		api.setToken("s3cret")
		b.typeInto("#user-id", "42")
		b.click("#lookup")
		b.waitJS(`!document.getElementById('token-box').hidden`)
		b.expectText("#message", "Admin token required or wrong. Enter the admin token above.")
		var focused string
		b.eval(`document.activeElement.id`, &focused)
		if focused != "token" {
			t.Errorf("focus on %q after 401, want the token input", focused)
		}
		b.shot("08-token-prompt")

		b.typeInto("#token", "s3cret")
		b.click("#token-save")
		// Saving the token repeats the lookup, now with the bearer.
		b.waitJS(`document.getElementById('token-box').hidden && document.getElementById('user-used').textContent === '9'`)
		b.typeInto("#group-id", "7")
		b.click("#open-group")
		b.waitJS(`document.getElementById('group-label').textContent === '7' && document.getElementById('message').hidden`)
		if n := api.count("401"); n != 1 {
			t.Errorf("%d answers 401, want 1 (the token is asked once)", n)
		}
		auth := api.authSince()
		if len(auth) < 3 || auth[0] != "" {
			t.Fatalf("Authorization headers %q: want none on the first call, then the bearer", auth)
		}
		for _, h := range auth[1:] {
			if h != "Bearer s3cret" {
				t.Errorf("request after the token carried Authorization %q", h)
			}
		}
		var stored string
		b.eval(`sessionStorage.getItem('caddy-rpm-admin-token')`, &stored)
		if stored != "s3cret" {
			t.Errorf("sessionStorage token %q", stored)
		}
		b.shot("09-token-ok")
	})

	b.t = t
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Errorf("page errors: %s", strings.Join(errs, "; "))
	}
}

// uiMux serves the page like the admin module does, plus api when not nil.
func uiMux(api *uiFakeAPI) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/admin/ui", uiHandler())
	mux.Handle("/admin/ui/", uiHandler())
	if api != nil {
		mux.Handle("/admin/users/", api)
		mux.Handle("/admin/groups/", api)
	}
	return mux
}

// ---- fake JSON API ---------------------------------------------------------

const uiFakeReadOnly = "the keys_file store is read-only; configure postgres to change data"

type uiEntry struct {
	UserID      int64  `json:"user_id"`
	RPMOverride *int64 `json:"rpm_override"`
}

func uiPtr(v int64) *int64 { return &v }

func uiJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// uiFakeAPI answers the few admin routes the page uses, with canned data.
type uiFakeAPI struct {
	mu        sync.Mutex
	token     string
	userUsed  int64
	overrides map[int64][]uiEntry
	puts      map[int64][]uiEntry
	counts    map[string]int
	deleting  int
	auth      []string  // Authorization headers seen since the token was set
	resetAt   time.Time // end of the fake rate-limit window
}

func newUIFakeAPI() *uiFakeAPI {
	return &uiFakeAPI{
		userUsed: 7,
		resetAt:  time.Now().Add(50 * time.Second),
		overrides: map[int64][]uiEntry{
			7: {{5, uiPtr(10)}, {6, uiPtr(20)}},
			9: {{1, uiPtr(10)}},
		},
		puts:   map[int64][]uiEntry{},
		counts: map[string]int{},
	}
}

func (f *uiFakeAPI) setUserUsed(n int64) { f.mu.Lock(); f.userUsed = n; f.mu.Unlock() }
func (f *uiFakeAPI) setToken(s string)   { f.mu.Lock(); f.token = s; f.auth = nil; f.mu.Unlock() }
func (f *uiFakeAPI) count(k string) int  { f.mu.Lock(); defer f.mu.Unlock(); return f.counts[k] }
func (f *uiFakeAPI) inFlight() int       { f.mu.Lock(); defer f.mu.Unlock(); return f.deleting }

func (f *uiFakeAPI) lastPut(gid int64) []uiEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.puts[gid]
}

func (f *uiFakeAPI) authSince() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auth...)
}

func uiWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func uiWriteErr(w http.ResponseWriter, status int, msg string) {
	uiWriteJSON(w, status, map[string]string{"error": msg})
}

func (f *uiFakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.token != "" {
		h := r.Header.Get("Authorization")
		f.auth = append(f.auth, h)
		if h != "Bearer "+f.token {
			f.counts["401"]++
			f.mu.Unlock()
			uiWriteErr(w, http.StatusUnauthorized, "admin token required")
			return
		}
	}
	f.mu.Unlock()

	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // admin, users|groups, id, what
	if len(parts) != 4 {
		uiWriteErr(w, http.StatusNotFound, "no such route")
		return
	}
	id, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		uiWriteErr(w, http.StatusBadRequest, "bad id")
		return
	}
	switch {
	case parts[1] == "users" && parts[3] == "rpm-status" && r.Method == http.MethodGet:
		f.status(w, id)
	case parts[1] == "groups" && parts[3] == "rpm-overrides":
		f.groupOverrides(w, r, id)
	default:
		uiWriteErr(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (f *uiFakeAPI) status(w http.ResponseWriter, id int64) {
	switch id {
	case 404:
		uiWriteErr(w, http.StatusNotFound, "user 404 not found")
		return
	case 500: // drop the connection: the browser sees a network error
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
	}
	f.mu.Lock()
	f.counts["GET status"]++
	used, resetAt := f.userUsed, f.resetAt
	f.mu.Unlock()
	left := time.Until(resetAt)
	uiWriteJSON(w, http.StatusOK, map[string]any{
		"user_id":        id,
		"user_rpm_used":  used,
		"user_rpm_limit": 60,
		"per_group": []map[string]any{
			{"group_id": 1, "group_name": "default", "used": 3, "limit": 30, "source": "group"},
			{"group_id": 2, "group_name": "premium", "used": 4, "limit": 0, "source": "override"},
		},
		"per_zone": []map[string]any{
			{"name": "expensive", "scope": "user", "used": 2, "limit": 5},
			{"name": "bulk", "scope": "key", "limit": 100},
		},
		"window_resets_in": int64((left + time.Second - 1) / time.Second),
		"window_resets_at": resetAt.UTC().Format(time.RFC3339),
	})
}

func (f *uiFakeAPI) groupOverrides(w http.ResponseWriter, r *http.Request, gid int64) {
	switch r.Method {
	case http.MethodGet:
		f.mu.Lock()
		entries := append([]uiEntry{}, f.overrides[gid]...)
		f.mu.Unlock()
		uiWriteJSON(w, http.StatusOK, map[string]any{"group_id": gid, "entries": entries})
	case http.MethodPut:
		var body struct {
			Entries []uiEntry `json:"entries"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			uiWriteErr(w, http.StatusBadRequest, "decode body: "+err.Error())
			return
		}
		if gid == 9 {
			uiWriteErr(w, http.StatusConflict, uiFakeReadOnly)
			return
		}
		for _, e := range body.Entries {
			if e.RPMOverride != nil && *e.RPMOverride < 0 {
				uiWriteErr(w, http.StatusBadRequest, "rpm_override must be >= 0")
				return
			}
		}
		f.mu.Lock()
		f.puts[gid] = body.Entries
		f.overrides[gid] = body.Entries
		f.mu.Unlock()
		uiWriteJSON(w, http.StatusOK, map[string]any{"group_id": gid, "entries": body.Entries})
	case http.MethodDelete:
		f.mu.Lock()
		f.counts["DELETE"]++
		f.deleting++
		f.mu.Unlock()
		time.Sleep(1500 * time.Millisecond) // long enough to look at the page mid-flight
		f.mu.Lock()
		n := len(f.overrides[gid])
		delete(f.overrides, gid)
		f.deleting--
		f.mu.Unlock()
		uiWriteJSON(w, http.StatusOK, map[string]any{"group_id": gid, "cleared": n})
	default:
		uiWriteErr(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// ---- browser helpers -------------------------------------------------------

type uiBrowser struct {
	t     *testing.T
	ctx   context.Context
	shots string
	n     int

	mu     sync.Mutex
	errors []string
}

func newUIBrowser(t *testing.T) *uiBrowser {
	t.Helper()
	profile := t.TempDir()
	shots, err := os.MkdirTemp("", "caddy-rpm-ui-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(uiChromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })

	b := &uiBrowser{t: t, ctx: ctx, shots: shots}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	}))
	return b
}

// onEvent records script errors and CSP violations; it must return fast.
func (b *uiBrowser) onEvent(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if strings.Contains(ev.Entry.Text, "Content Security Policy") || ev.Entry.Source == "javascript" {
			msg = string(ev.Entry.Source) + ": " + ev.Entry.Text
		}
	}
	if msg != "" {
		b.mu.Lock()
		b.errors = append(b.errors, msg)
		b.mu.Unlock()
	}
}

func (b *uiBrowser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

func (b *uiBrowser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval runs a JavaScript expression and decodes its value into out.
func (b *uiBrowser) eval(expr string, out any) {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	if len(v) == 0 {
		v = []byte("null")
	}
	if err := json.Unmarshal(v, out); err != nil {
		b.t.Fatalf("eval %s: decode %s: %v", expr, v, err)
	}
}

// waitJS waits until expr is truthy, and fails with a screenshot after 10 s.
func (b *uiBrowser) waitJS(expr string) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		b.shot("failed")
		b.t.Fatalf("waiting for %s: %v (message: %q)", expr, err, b.text("#message"))
	}
}

func (b *uiBrowser) text(sel string) string {
	b.t.Helper()
	var s string
	b.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ''`, sel), &s)
	return strings.TrimSpace(s)
}

func (b *uiBrowser) expectText(sel, want string) {
	b.t.Helper()
	if got := b.text(sel); got != want {
		b.t.Errorf("%s: text %q, want %q", sel, got, want)
	}
}

func (b *uiBrowser) expectValue(sel, want string) {
	b.t.Helper()
	var got string
	b.eval(fmt.Sprintf(`document.querySelector(%q).value`, sel), &got)
	if got != want {
		b.t.Errorf("%s: value %q, want %q", sel, got, want)
	}
}

func (b *uiBrowser) expectVisible(sel string) {
	b.t.Helper()
	var visible bool
	b.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q);
		return !!e && !e.hidden && e.getClientRects().length > 0; })()`, sel), &visible)
	if !visible {
		b.t.Errorf("%s is not visible", sel)
	}
}

func (b *uiBrowser) countdown() int {
	b.t.Helper()
	s := strings.TrimSuffix(b.text("#countdown"), " s")
	n, err := strconv.Atoi(s)
	if err != nil {
		b.t.Fatalf("countdown %q is not a number of seconds", s)
	}
	return n
}

// typeInto replaces an input's value by typing, as an operator would.
func (b *uiBrowser) typeInto(sel, v string) {
	b.t.Helper()
	var ok bool
	b.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false;
		e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, sel), &ok)
	if !ok {
		b.t.Fatalf("no element %s", sel)
	}
	b.do(chromedp.SendKeys(chromedp.CSS(sel), v))
}

func (b *uiBrowser) click(sel string) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(sel)))
}

// doubleClick sends the mouse events of a real double click: two presses and
// releases, the second with clickCount 2, back to back.
func (b *uiBrowser) doubleClick(sel string) {
	b.t.Helper()
	var c struct{ X, Y float64 }
	b.eval(fmt.Sprintf(`(() => { const r = document.querySelector(%q).getBoundingClientRect();
		return {X: r.x + r.width / 2, Y: r.y + r.height / 2}; })()`, sel), &c)
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, n := range []int64{1, 2} {
			for _, typ := range []input.DispatchMouseEventType{
				input.DispatchMouseEventTypeMousePressed, input.DispatchMouseEventTypeMouseReleased,
			} {
				_, err := cdp.Call(ctx, t, input.DispatchMouseEvent, input.DispatchMouseEventParams{
					Type: typ, X: c.X, Y: c.Y, Button: input.MouseButtonLeft, ClickCount: n,
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// shot saves a screenshot of the page and logs where.
func (b *uiBrowser) shot(name string) {
	b.t.Helper()
	b.n++
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}
