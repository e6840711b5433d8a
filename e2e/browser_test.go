package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// brwChromium is where Debian installs Chromium; CI installs it there.
const brwChromium = "/usr/bin/chromium"

// brwRequireChromium skips the test when Chromium is missing, except in CI
// (CI=true), where a missing browser is a broken setup and fails the test.
func brwRequireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(brwChromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: the CI job must install chromium (apt-get install chromium): %v", brwChromium, err)
		}
		t.Skipf("skipping browser test: %s not found (apt-get install chromium)", brwChromium)
	}
}

// brwBrowser drives one headless Chromium tab.
type brwBrowser struct {
	t     *testing.T
	ctx   context.Context
	shots string // screenshot directory; it outlives the test (CI artifact)
	n     int

	mu     sync.Mutex
	errors []string
}

// newBrwBrowser starts Chromium with a throwaway profile; screenshots go to
// a directory made with os.MkdirTemp so that CI can keep it.
func newBrwBrowser(t *testing.T) *brwBrowser {
	t.Helper()
	shots, err := os.MkdirTemp("", "caddy-rpm-e2e-ui-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)
	fmt.Println("caddy-rpm e2e UI screenshots:", shots)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(brwChromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })

	b := &brwBrowser{t: t, ctx: ctx, shots: shots}
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
func (b *brwBrowser) onEvent(ev any) {
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

func (b *brwBrowser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

func (b *brwBrowser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// open loads the admin page of c and waits until its script is running.
//
// The navigation carries the page's own address as Referer. Caddy's admin
// endpoint checks the Origin (or Referer) of every request that has a
// Sec-Fetch-Mode header, and a typed-in address has neither, so Chromium
// gets 403 for it ("client is not allowed to access from origin" with an
// empty origin). With the Referer the load looks like following a link on
// the page itself. For operators typing the address, the admin endpoint
// needs an empty origin allowed: admin <addr> { origins "" <addr> }.
func (b *brwBrowser) open(c *caddyInstance) {
	b.t.Helper()
	u := c.AdminURL + "/admin/ui"
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		res, err := cdp.Call(ctx, t, page.Navigate, page.NavigateParams{URL: u, Referrer: u})
		if err != nil {
			return err
		}
		if res.ErrorText != "" {
			return fmt.Errorf("navigate to %s: %s", u, res.ErrorText)
		}
		return nil
	}))
	// The old document's execution context goes away during the navigation,
	// so poll with fresh evaluations and let errors pass until the deadline.
	for deadline := time.Now().Add(15 * time.Second); ; {
		loaded, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](
			`location.href === `+strconv.Quote(u)+` && document.readyState === 'complete' && document.getElementById('lookup') !== null`))
		if err == nil && loaded {
			break
		}
		if time.Now().After(deadline) {
			b.shot("load-failed")
			b.t.Fatalf("admin page %s did not load: %v\n%s", u, err, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// app.js is deferred: it has run once the load event fired. Prove it
	// (and the stylesheet) loaded through Caddy's origin checks.
	var ok struct {
		Script bool `json:"script"`
		Style  bool `json:"style"`
	}
	b.eval(`({script: performance.getEntriesByType('resource').some(e => e.name.endsWith('/ui/app.js') && e.responseStatus === 200),
		style: document.styleSheets.length > 0 && document.styleSheets[0].cssRules.length > 0})`, &ok)
	if !ok.Script || !ok.Style {
		b.shot("asset-failure")
		b.t.Fatalf("page assets did not load through Caddy's admin endpoint: %+v\n%s", ok, c.Logs())
	}
}

// eval runs a JavaScript expression and decodes its value into out.
func (b *brwBrowser) eval(expr string, out any) {
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

// waitJS waits until expr is truthy, and fails with a screenshot after 15 s.
func (b *brwBrowser) waitJS(expr string) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		b.shot("failed")
		b.t.Fatalf("waiting for %s: %v (message: %q)", expr, err, b.text("#message"))
	}
}

func (b *brwBrowser) text(sel string) string {
	b.t.Helper()
	var s string
	b.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ''`, sel), &s)
	return strings.TrimSpace(s)
}

func (b *brwBrowser) expectText(sel, want string) {
	b.t.Helper()
	if got := b.text(sel); got != want {
		b.t.Errorf("%s: text %q, want %q", sel, got, want)
	}
}

func (b *brwBrowser) expectVisible(sel string) {
	b.t.Helper()
	var visible bool
	b.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q);
		return !!e && !e.hidden && e.getClientRects().length > 0; })()`, sel), &visible)
	if !visible {
		b.t.Errorf("%s is not visible", sel)
	}
}

// typeInto replaces an input's value by typing, as an operator would.
func (b *brwBrowser) typeInto(sel, v string) {
	b.t.Helper()
	var ok bool
	b.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false;
		e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, sel), &ok)
	if !ok {
		b.t.Fatalf("no element %s", sel)
	}
	b.do(chromedp.SendKeys(chromedp.CSS(sel), v))
}

func (b *brwBrowser) click(sel string) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(sel)))
}

// doubleClick sends the mouse events of a real double click: two presses and
// releases, the second with clickCount 2, back to back.
func (b *brwBrowser) doubleClick(sel string) {
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
func (b *brwBrowser) shot(name string) {
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

// brwAdminRequest is one "received request" entry of Caddy's admin log.
type brwAdminRequest struct {
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Headers map[string][]string `json:"headers"`
}

// brwAdminRequests returns the requests Caddy's admin endpoint logged
// (logger admin.api, at INFO, before any handler runs) whose URI starts
// with uriPrefix. It counts what reached the server, not what the page
// thinks it sent.
func brwAdminRequests(t *testing.T, c *caddyInstance, uriPrefix string) []brwAdminRequest {
	t.Helper()
	var out []brwAdminRequest
	sc := bufio.NewScanner(strings.NewReader(c.Logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"received request"`) {
			continue
		}
		var e struct {
			Logger string `json:"logger"`
			Msg    string `json:"msg"`
			brwAdminRequest
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Logger != "admin.api" || e.Msg != "received request" {
			continue
		}
		if strings.HasPrefix(e.URI, uriPrefix) {
			out = append(out, e.brwAdminRequest)
		}
	}
	return out
}
