package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddyrpm/caddy-rpm/internal/browsertest"
)

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
	if testing.Short() {
		t.Skip("skipping browser test in -short mode")
	}

	api := newUIFakeAPI()
	srv := httptest.NewServer(uiMux(api))
	defer srv.Close()

	b := browsertest.New(t,
		browsertest.WithScreenshotPrefix("caddy-rpm-ui-"),
		browsertest.WithStatusSelector("#message"))

	b.Do(chromedp.Navigate(srv.URL + "/admin/ui"))
	b.WaitJS(`document.getElementById('lookup') !== null`)
	b.Shot("00-empty")

	t.Run("lookup", func(t *testing.T) {
		b.SetT(t)
		b.TypeInto("#user-id", "42")
		b.Click("#lookup")
		b.WaitJS(`document.getElementById('user-used').textContent === '7'`)
		b.ExpectText("#user-limit", "60")
		b.ExpectText("#user-reserved", "5")
		b.ExpectText(`#per-group tr[data-group-id="1"] td.limit`, "30")
		b.ExpectText(`#per-group tr[data-group-id="2"] td.limit`, "unlimited")
		b.ExpectText(`#per-group tr[data-group-id="2"] td.source`, "override")
		b.ExpectText(`#per-group tr[data-group-id="2"] td:nth-child(2)`, "premium")
		b.ExpectText(`#per-zone tr[data-zone="expensive"] td.used`, "2")
		b.ExpectText(`#per-zone tr[data-zone="bulk"] td.used`, "per key")
		b.ExpectText("#user-inflight", "1")
		b.ExpectText("#user-concurrency", "2")
		b.ExpectValue("#concurrency", "2")
		b.ExpectText(`#per-zone tr[data-zone="expensive"] td.inflight`, "1")
		b.ExpectText(`#per-zone tr[data-zone="expensive"] td.concurrency`, "3")
		b.ExpectText(`#per-zone tr[data-zone="bulk"] td.concurrency`, "unlimited")

		// The countdown ticks down each second from window_resets_in.
		first := uiCountdown(b)
		if first < 40 || first > 50 {
			t.Errorf("countdown %d s, want about 50", first)
		}
		b.Shot("01-lookup")
		time.Sleep(2200 * time.Millisecond)
		if d := first - uiCountdown(b); d < 1 || d > 3 {
			t.Errorf("countdown went down by %d s in 2.2 s", d)
		}

		// Auto-refresh every 3 s picks up new numbers without a click.
		api.setUserUsed(9)
		b.WaitJS(`document.getElementById('user-used').textContent === '9'`)
		if n := api.count("GET status"); n < 2 {
			t.Errorf("status fetched %d times, want refreshes", n)
		}
	})

	t.Run("concurrency", func(t *testing.T) {
		b.SetT(t)
		b.TypeInto("#concurrency", "5")
		b.Click("#save-concurrency")
		b.WaitJS(`document.getElementById('message').textContent.includes('may have 5 requests in flight')`)
		b.WaitJS(`document.getElementById('user-concurrency').textContent === '5'`)
		if got := api.patched(42); got == nil || *got != 5 {
			t.Errorf("PATCH sent concurrency %v, want 5", got)
		}
		b.TypeInto("#concurrency", "-1")
		b.Click("#save-concurrency")
		b.WaitJS(`document.getElementById('message').textContent.startsWith('Invalid input: ')`)
		if msg := b.Text("#message"); !strings.Contains(msg, "concurrency must be >= 0") {
			t.Errorf("message %q, want the server's reason", msg)
		}
		b.ExpectValue("#concurrency", "-1") // a refresh keeps what the operator typed
		b.Shot("01b-concurrency")
	})

	t.Run("save", func(t *testing.T) {
		b.SetT(t)
		b.OpenGroup("7", `document.querySelectorAll('#overrides tr').length === 2`)
		b.ExpectValue(`#overrides tr[data-user-id="5"] input.override-value`, "10")

		b.TypeInto(`#overrides tr[data-user-id="5"] input.override-value`, "15")
		b.TypeInto(`#overrides tr[data-user-id="6"] input.override-value`, "0")
		b.Click("#add-row")
		b.TypeInto(`#overrides tr:last-child input.user-id-value`, "8")
		b.TypeInto(`#overrides tr:last-child input.override-value`, "25")
		b.Shot("02-edited")
		b.Click("#save")
		b.WaitJS(`document.getElementById('message').textContent.includes('Saved 3 overrides')`)

		want := []uiEntry{{5, uiPtr(15)}, {6, uiPtr(0)}, {8, uiPtr(25)}}
		if got := api.lastPut(7); !reflect.DeepEqual(got, want) {
			t.Errorf("PUT body entries %s, want %s", uiJSON(got), uiJSON(want))
		}
		// The list is reloaded from the server.
		b.WaitJS(`document.querySelectorAll('#overrides tr').length === 3`)
		b.ExpectValue(`#overrides tr[data-user-id="8"] input.override-value`, "25")
		b.Shot("03-saved")
	})

	t.Run("clear all", func(t *testing.T) {
		b.SetT(t)
		before := api.count("DELETE")
		b.DoubleClick("#clear-all")

		// Read the state while the DELETE is still in flight (the fake sleeps 1.5 s).
		b.ExpectClearing()
		for deadline := time.Now().Add(time.Second); api.inFlight() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := api.inFlight(); n != 1 {
			t.Errorf("%d DELETEs in flight, want 1", n)
		}
		b.Shot("04-clearing")
		b.ExpectClearAllIgnored() // a third click, still in flight
		b.ExpectCleared(3)
		if n := api.count("DELETE") - before; n != 1 {
			t.Errorf("%d DELETE requests for a double click, want exactly 1", n)
		}
		b.Shot("05-cleared")
	})

	t.Run("errors", func(t *testing.T) {
		b.SetT(t)
		// 409 from the read-only keys_file store.
		b.OpenGroup("9", `document.querySelectorAll('#overrides tr').length === 1`)
		b.Click("#save")
		b.WaitJS(`document.getElementById('message').textContent.includes('read-only')`)
		msg := b.Text("#message")
		if !strings.Contains(msg, uiFakeReadOnly) || !strings.Contains(msg, "Edit the keys file") {
			t.Errorf("409 message %q", msg)
		}
		b.ExpectVisible("#message")
		b.Shot("06-conflict")

		// 400 with the server's reason.
		b.OpenGroup("7", `document.getElementById('group-label').textContent === '7'`)
		b.Click("#add-row")
		b.TypeInto(`#overrides tr:last-child input.user-id-value`, "3")
		b.TypeInto(`#overrides tr:last-child input.override-value`, "-1")
		b.Click("#save")
		b.WaitJS(`document.getElementById('message').textContent.startsWith('Invalid input: ')`)
		if msg := b.Text("#message"); !strings.Contains(msg, "rpm_override must be >= 0") {
			t.Errorf("400 message %q", msg)
		}

		// 404 and a network failure.
		b.TypeInto("#user-id", "404")
		b.Click("#lookup")
		b.WaitJS(`document.getElementById('message').textContent.startsWith('Not found')`)
		b.TypeInto("#user-id", "500")
		b.Click("#lookup")
		b.WaitJS(`document.getElementById('message').textContent.startsWith('Cannot reach the admin API')`)
		b.Shot("07-network")
	})

	t.Run("token", func(t *testing.T) {
		b.SetT(t)
		// A fresh page, so that no refresh of an earlier user races the lookup.
		b.Do(chromedp.Navigate(srv.URL + "/admin/ui"))
		b.WaitJS(`document.getElementById('lookup') !== null`)
		api.setToken("s3cret")
		b.TypeInto("#user-id", "42")
		b.Click("#lookup")
		b.WaitJS(`!document.getElementById('token-box').hidden`)
		b.ExpectText("#message", "Admin token required or wrong. Enter the admin token above.")
		var focused string
		b.Eval(`document.activeElement.id`, &focused)
		if focused != "token" {
			t.Errorf("focus on %q after 401, want the token input", focused)
		}
		b.Shot("08-token-prompt")

		b.TypeInto("#token", "s3cret")
		b.Click("#token-save")
		// Saving the token repeats the lookup, now with the bearer.
		b.WaitJS(`document.getElementById('token-box').hidden && document.getElementById('user-used').textContent === '9'`)
		b.OpenGroup("7", `document.getElementById('group-label').textContent === '7' && document.getElementById('message').hidden`)
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
		b.Eval(`sessionStorage.getItem('caddy-rpm-admin-token')`, &stored)
		if stored != "s3cret" {
			t.Errorf("sessionStorage token %q", stored)
		}
		b.Shot("09-token-ok")
	})

	b.SetT(t)
	b.ExpectNoPageErrors()
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
	mu       sync.Mutex
	token    string
	userUsed int64
	// concurrency is the user's concurrency, set by PATCH; patches holds
	// the concurrency each PATCH sent, by user.
	concurrency int64
	patches     map[int64]*int64
	overrides   map[int64][]uiEntry
	puts        map[int64][]uiEntry
	counts      map[string]int
	deleting    int
	auth        []string  // Authorization headers seen since the token was set
	resetAt     time.Time // end of the fake rate-limit window
}

func newUIFakeAPI() *uiFakeAPI {
	return &uiFakeAPI{
		userUsed: 7,
		resetAt:  time.Now().Add(50 * time.Second),
		overrides: map[int64][]uiEntry{
			7: {{5, uiPtr(10)}, {6, uiPtr(20)}},
			9: {{1, uiPtr(10)}},
		},
		puts:        map[int64][]uiEntry{},
		counts:      map[string]int{},
		concurrency: 2,
		patches:     map[int64]*int64{},
	}
}

func (f *uiFakeAPI) patched(uid int64) *int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.patches[uid]
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
	if len(parts) == 3 && parts[1] == "users" && r.Method == http.MethodPatch {
		f.patchUser(w, r, parts[2])
		return
	}
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

// patchUser answers PATCH /admin/users/{id} with a concurrency.
func (f *uiFakeAPI) patchUser(w http.ResponseWriter, r *http.Request, id string) {
	uid, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		uiWriteErr(w, http.StatusBadRequest, "bad id")
		return
	}
	var body struct {
		Concurrency *int64 `json:"concurrency"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Concurrency == nil {
		uiWriteErr(w, http.StatusBadRequest, "invalid body")
		return
	}
	if *body.Concurrency < 0 {
		uiWriteErr(w, http.StatusBadRequest, "concurrency must be >= 0, got "+strconv.FormatInt(*body.Concurrency, 10))
		return
	}
	f.mu.Lock()
	f.patches[uid] = body.Concurrency
	f.concurrency = *body.Concurrency
	f.mu.Unlock()
	uiWriteJSON(w, http.StatusOK, map[string]any{"user_id": uid, "concurrency": *body.Concurrency})
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
	used, resetAt, conc := f.userUsed, f.resetAt, f.concurrency
	f.mu.Unlock()
	left := time.Until(resetAt)
	uiWriteJSON(w, http.StatusOK, map[string]any{
		"user_id":        id,
		"user_rpm_used":  used,
		"user_rpm_limit": 60,
		"concurrency":    conc,
		"in_flight":      1,
		"per_group": []map[string]any{
			{"group_id": 1, "group_name": "default", "used": 3, "limit": 30, "source": "group"},
			{"group_id": 2, "group_name": "premium", "used": 4, "limit": 0, "source": "override"},
		},
		"per_zone": []map[string]any{
			{"name": "expensive", "scope": "user", "used": 2, "limit": 5, "concurrency": 3, "in_flight": 1},
			{"name": "bulk", "scope": "key", "limit": 100},
		},
		"window_resets_in":  int64((left + time.Second - 1) / time.Second),
		"window_resets_at":  resetAt.UTC().Format(time.RFC3339),
		"user_rpm_reserved": 5,
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

// uiCountdown reads the page's countdown in seconds.
func uiCountdown(b *browsertest.Browser) int {
	t := b.T()
	t.Helper()
	s := strings.TrimSuffix(b.Text("#countdown"), " s")
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("countdown %q is not a number of seconds", s)
	}
	return n
}
