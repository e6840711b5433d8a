// Package browsertest drives a headless Debian Chromium from Go tests
// through the Chrome DevTools Protocol (chromedp). It holds the driver the
// admin page's browser tests share: starting the browser, evaluating
// JavaScript, typing and clicking like an operator, waiting for the page,
// screenshots, and capturing script errors and CSP violations.
//
// It is a non-test package so that tests of several packages can use it;
// nothing outside tests should import it.
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// ChromiumPath is where Debian installs Chromium; CI installs it there.
const ChromiumPath = "/usr/bin/chromium"

// config is what the options set.
type config struct {
	timeout      time.Duration
	pollInterval time.Duration
	pollTimeout  time.Duration
	shotsPrefix  string
	statusSel    string
}

// Option changes how New sets up the browser.
type Option func(*config)

// WithTimeout bounds the whole browser session (default 2 minutes); every
// action after it fails.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithPolling sets how often WaitJS evaluates its expression and how long
// it waits before failing (default every 50 ms, for 10 s).
func WithPolling(interval, timeout time.Duration) Option {
	return func(c *config) { c.pollInterval, c.pollTimeout = interval, timeout }
}

// WithScreenshotPrefix sets the os.MkdirTemp pattern of the screenshot
// directory (default "caddy-rpm-browser-").
func WithScreenshotPrefix(prefix string) Option {
	return func(c *config) { c.shotsPrefix = prefix }
}

// WithStatusSelector names an element whose text WaitJS reports when it
// times out, such as the page's message line (default: none).
func WithStatusSelector(sel string) Option {
	return func(c *config) { c.statusSel = sel }
}

// RequireChromium skips the test when Chromium is missing at ChromiumPath,
// except in CI (env CI=true), where a missing browser is a broken setup and
// fails the test.
func RequireChromium(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: the CI job must install chromium (apt-get install chromium): %v", ChromiumPath, err)
		}
		t.Skipf("skipping browser test: %s not found (apt-get install chromium)", ChromiumPath)
	}
}

// Browser drives one headless Chromium tab. Its methods report failures to
// the test given to New or, later, to SetT; they are not safe for
// concurrent use.
type Browser struct {
	t     testing.TB
	ctx   context.Context
	cfg   config
	shots string // screenshot directory; it outlives the test (CI artifact)
	n     int

	mu     sync.Mutex
	errors []string
}

// New starts Chromium for the test t, or skips or fails t as
// RequireChromium does when there is none. The browser runs headless
// without sandbox, GPU, background networking, first-run UI, component
// updates or sync, with a throwaway profile in t.TempDir and a 1280×900
// window; it stops when t ends. Screenshots go to a directory made with
// os.MkdirTemp, which is kept so that CI can collect it; New prints its path
// with t.Logf and on standard output.
func New(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	RequireChromium(t)
	cfg := config{
		timeout:      2 * time.Minute,
		pollInterval: 50 * time.Millisecond,
		pollTimeout:  10 * time.Second,
		shotsPrefix:  "caddy-rpm-browser-",
	}
	for _, o := range opts {
		o(&cfg)
	}

	shots, err := os.MkdirTemp("", cfg.shotsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)
	fmt.Println(t.Name(), "screenshots:", shots)

	aopts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath),
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
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), aopts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, cfg.timeout)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })

	b := &Browser{t: t, ctx: ctx, cfg: cfg, shots: shots}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.Do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	}))
	return b
}

// SetT makes b report to t from now on, typically a subtest's t at the
// start of t.Run and the parent's t after the subtests.
func (b *Browser) SetT(t testing.TB) { b.t = t }

// T returns the test b reports to.
func (b *Browser) T() testing.TB { return b.t }

// Context returns the browser's chromedp context, for actions the methods
// do not cover.
func (b *Browser) Context() context.Context { return b.ctx }

// ShotsDir returns the screenshot directory.
func (b *Browser) ShotsDir() string { return b.shots }

// onEvent records script errors and CSP violations; it must return fast.
func (b *Browser) onEvent(ev any) {
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

// PageErrors returns the uncaught script exceptions, JavaScript console
// errors and Content Security Policy violations seen so far.
func (b *Browser) PageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// Do runs chromedp actions and fails the test on error.
func (b *Browser) Do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// Eval runs a JavaScript expression and decodes its value, as JSON, into
// out; undefined decodes as null.
func (b *Browser) Eval(expr string, out any) {
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

// WaitJS waits until expr is truthy. When the polling timeout passes it
// takes a screenshot and fails the test, with the text of the status
// element if one was set.
func (b *Browser) WaitJS(expr string) {
	b.t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(b.cfg.pollInterval), chromedp.WithPollingTimeout(b.cfg.pollTimeout)))
	if err != nil {
		b.Shot("failed")
		if b.cfg.statusSel != "" {
			b.t.Fatalf("waiting for %s: %v (message: %q)", expr, err, b.Text(b.cfg.statusSel))
		}
		b.t.Fatalf("waiting for %s: %v", expr, err)
	}
}

// Text returns the trimmed text content of the first element matching the
// CSS selector sel, or "" when there is none.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	var s string
	b.Eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ''`, sel), &s)
	return strings.TrimSpace(s)
}

// ExpectText reports an error unless Text(sel) is want.
func (b *Browser) ExpectText(sel, want string) {
	b.t.Helper()
	if got := b.Text(sel); got != want {
		b.t.Errorf("%s: text %q, want %q", sel, got, want)
	}
}

// ExpectValue reports an error unless the value of the input matching sel
// is want.
func (b *Browser) ExpectValue(sel, want string) {
	b.t.Helper()
	var got string
	b.Eval(fmt.Sprintf(`document.querySelector(%q).value`, sel), &got)
	if got != want {
		b.t.Errorf("%s: value %q, want %q", sel, got, want)
	}
}

// ExpectVisible reports an error unless the element matching sel exists,
// is not hidden and has a layout box.
func (b *Browser) ExpectVisible(sel string) {
	b.t.Helper()
	var visible bool
	b.Eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q);
		return !!e && !e.hidden && e.getClientRects().length > 0; })()`, sel), &visible)
	if !visible {
		b.t.Errorf("%s is not visible", sel)
	}
}

// TypeInto replaces an input's value by typing, as an operator would: it
// clears the input (with an input event) and sends v as key strokes.
func (b *Browser) TypeInto(sel, v string) {
	b.t.Helper()
	var ok bool
	b.Eval(fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false;
		e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, sel), &ok)
	if !ok {
		b.t.Fatalf("no element %s", sel)
	}
	b.Do(chromedp.SendKeys(chromedp.CSS(sel), v))
}

// Click clicks the element matching sel.
func (b *Browser) Click(sel string) {
	b.t.Helper()
	b.Do(chromedp.Click(chromedp.CSS(sel)))
}

// DoubleClick sends the mouse events of a real double click in the middle
// of the element matching sel: two presses and releases, the second with
// clickCount 2, back to back.
func (b *Browser) DoubleClick(sel string) {
	b.t.Helper()
	var c struct{ X, Y float64 }
	b.Eval(fmt.Sprintf(`(() => { const r = document.querySelector(%q).getBoundingClientRect();
		return {X: r.x + r.width / 2, Y: r.y + r.height / 2}; })()`, sel), &c)
	b.Do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
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

// Shot saves a full-page screenshot as NN-name.png in the screenshot
// directory, NN counting up from 01, and logs where. A failed capture is
// only logged.
func (b *Browser) Shot(name string) {
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

// ExpectNoPageErrors reports an error listing PageErrors, if any.
func (b *Browser) ExpectNoPageErrors() {
	b.t.Helper()
	if errs := b.PageErrors(); len(errs) > 0 {
		b.t.Errorf("page errors: %s", strings.Join(errs, "; "))
	}
}
