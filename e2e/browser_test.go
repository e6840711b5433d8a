package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/caddyrpm/caddy-rpm/internal/browsertest"
)

// brwNew starts the headless Chromium of the e2e browser tests, or skips
// or fails the test as browsertest.RequireChromium does.
func brwNew(t *testing.T) *browsertest.Browser {
	t.Helper()
	return browsertest.New(t,
		browsertest.WithTimeout(4*time.Minute),
		browsertest.WithPolling(25*time.Millisecond, 15*time.Second),
		browsertest.WithScreenshotPrefix("caddy-rpm-e2e-ui-"),
		browsertest.WithStatusSelector("#message"))
}

// brwOpen loads the admin page of c and waits until its script is running.
//
// The navigation carries the page's own address as Referer. Caddy's admin
// endpoint checks the Origin (or Referer) of every request that has a
// Sec-Fetch-Mode header, and a typed-in address has neither, so Chromium
// gets 403 for it ("client is not allowed to access from origin" with an
// empty origin). With the Referer the load looks like following a link on
// the page itself. For operators typing the address, the admin endpoint
// needs an empty origin allowed: admin <addr> { origins "" <addr> }.
func brwOpen(b *browsertest.Browser, c *caddyInstance) {
	t := b.T()
	t.Helper()
	u := c.AdminURL + "/admin/ui"
	b.Do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
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
		loaded, err := chromedp.Run(b.Context(), chromedp.Evaluate[bool](
			`location.href === `+strconv.Quote(u)+` && document.readyState === 'complete' && document.getElementById('lookup') !== null`))
		if err == nil && loaded {
			break
		}
		if time.Now().After(deadline) {
			b.Shot("load-failed")
			t.Fatalf("admin page %s did not load: %v\n%s", u, err, c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// app.js is deferred: it has run once the load event fired. Prove it
	// (and the stylesheet) loaded through Caddy's origin checks.
	var ok struct {
		Script bool `json:"script"`
		Style  bool `json:"style"`
	}
	b.Eval(`({script: performance.getEntriesByType('resource').some(e => e.name.endsWith('/ui/app.js') && e.responseStatus === 200),
		style: document.styleSheets.length > 0 && document.styleSheets[0].cssRules.length > 0})`, &ok)
	if !ok.Script || !ok.Style {
		b.Shot("asset-failure")
		t.Fatalf("page assets did not load through Caddy's admin endpoint: %+v\n%s", ok, c.Logs())
	}
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
