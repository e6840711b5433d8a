package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

// TestStreamedResponsesCarryRateLimitHeaders: the headers are set before
// the request goes upstream, so a streamed (SSE) answer has them too, and
// events arrive as the upstream flushes them.
func TestStreamedResponsesCarryRateLimitHeaders(t *testing.T) {
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		flusher := w.(http.Flusher)
		for i := range 3 {
			fmt.Fprintf(w, "data: chunk %d\n\n", i)
			flusher.Flush()
			time.Sleep(50 * time.Millisecond)
		}
	}))
	t.Cleanup(sse.Close)
	c := startCaddy(t, params{KeysFile: demoKeysPath(t), Redis: "off", Upstream: sse.URL, Site: `rpm
	reverse_proxy {{.Upstream}} {
		flush_interval -1
	}`})
	redistest.WaitForLocalWindow(t, 10*time.Second)

	req, _ := http.NewRequest(http.MethodGet, c.URL+"/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer sk-demo-caddy-rpm-key")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The demo user: user limit 60, override 10 in its group.
	if got := resp.Header.Get("RateLimit-Policy"); got != `"user";q=60;w=60, "group";q=10;w=60` {
		t.Errorf("RateLimit-Policy on a streamed response: %q", got)
	}
	if resp.Header.Get("RateLimit") == "" || resp.Header.Get("X-RateLimit-Remaining") == "" {
		t.Errorf("rate-limit headers missing on a streamed response: %v", resp.Header)
	}
	events := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: chunk") {
			events++
		}
	}
	if events != 3 {
		t.Fatalf("%d events streamed through, want 3", events)
	}
}
