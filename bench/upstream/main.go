// Command upstream is the benchmark's origin: a minimal HTTP/1.1 server on
// loopback that answers every request with the same small JSON body, so
// that the cost measured is the gateway's, not the origin's.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	extra := flag.Int("headers", 0, "extra response headers, as the APIs a gateway fronts send (request ids, versions, timings)")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || host != "127.0.0.1" {
		log.Fatalf("upstream: -addr must be 127.0.0.1:<port>, not %q", *addr)
	}
	body := []byte(`{"object":"list","data":[{"id":"bench-model","object":"model"}]}`)
	length := strconv.Itoa(len(body))
	names := make([]string, *extra)
	for i := range names {
		names[i] = "X-Upstream-Header-" + strconv.Itoa(i+1)
	}
	value := []string{"bench-0123456789"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr["Content-Type"] = []string{"application/json"}
		hdr["Content-Length"] = []string{length}
		for _, name := range names {
			hdr[name] = value
		}
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	log.Printf("upstream listening on %s", ln.Addr())
	log.Fatal((&http.Server{Handler: h}).Serve(ln))
}
