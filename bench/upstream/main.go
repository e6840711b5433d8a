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
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || host != "127.0.0.1" {
		log.Fatalf("upstream: -addr must be 127.0.0.1:<port>, not %q", *addr)
	}
	body := []byte(`{"object":"list","data":[{"id":"bench-model","object":"model"}]}`)
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr["Content-Type"] = []string{"application/json"}
		hdr["Content-Length"] = []string{length}
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("upstream: %v", err)
	}
	log.Printf("upstream listening on %s", ln.Addr())
	log.Fatal((&http.Server{Handler: h}).Serve(ln))
}
