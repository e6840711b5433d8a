package main

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// target is one scenario's endpoint.
type target struct {
	Name string // scenario name
	Addr string // 127.0.0.1:port
	Path string
	// Key is sent as Authorization: Bearer <key>; empty: none; RandomKey: a
	// new random key per request; a key range (see parseKeyRange): one of
	// its keys, drawn uniformly at random, per request.
	Key    string
	Expect int // the status every request should get
}

// sample is the outcome of one load segment against one target.
type sample struct {
	Elapsed   time.Duration
	Requests  int64 // complete responses
	Errors    int64 // transport or protocol errors (the connection is redialled)
	Statuses  map[int]int64
	Latencies []int64   // ns, one per complete response
	LastOK    time.Time // when the last 200 response was read (zero: none)
}

// run drives target with n keep-alive connections, each sending its next
// request as soon as the previous response is read, for d.
func run(t target, n int, d time.Duration) sample {
	conns := dialers(t.Addr, n)
	defer closeAll(conns)
	return drive(conns, time.Now().Add(d), requests(t))
}

// runEach sends one request with each key of t's key range, in order, on n
// connections: it loads every key into the gateway's caches.
func runEach(t target, n int) sample {
	req, keyAt, keyLen := buildRequest(t)
	kr, _ := parseKeyRange(t.Key)
	var next atomic.Int64
	conns := dialers(t.Addr, n)
	defer closeAll(conns)
	return drive(conns, time.Now().Add(time.Hour), func() nextRequest {
		return kr.each(req, keyAt, keyLen, &next)
	})
}

// requests returns a maker of t's request sequences, one per connection:
// the same request, or one with a new random key or a key of t's key range
// drawn at random each time.
func requests(t target) func() nextRequest {
	req, keyAt, keyLen := buildRequest(t)
	kr, _ := parseKeyRange(t.Key)
	return func() nextRequest {
		switch {
		case t.Key == RandomKey:
			return randomKeys(req, keyAt)
		case kr != nil:
			return kr.uniform(req, keyAt, keyLen)
		}
		return fixedKey(req)
	}
}

// A nextRequest returns a connection's next request, or nil when there is
// none; the request is read before nextRequest is called again. Each
// connection calls its own.
type nextRequest func() []byte

func fixedKey(req []byte) nextRequest { return func() []byte { return req } }

func randomKeys(req []byte, keyAt int) nextRequest {
	req = bytes.Clone(req)
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)
	return func() []byte {
		fillRandomKey(req[keyAt:keyAt+randomKeyLen], rng)
		return req
	}
}

// drive runs each of conns with the requests of its own newNext, until
// deadline or until its requests run out; it returns when every response
// is read, and leaves the connections open.
func drive(conns []*keepAlive, deadline time.Time, newNext func() nextRequest) sample {
	var wg sync.WaitGroup
	results := make([]sample, len(conns))
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = worker(c, newNext(), deadline)
		}()
	}
	wg.Wait()
	out := merge(results)
	out.Elapsed = time.Since(start)
	return out
}

// keepAlive is one client connection, dialled on first use and again
// after an error or a "Connection: close".
type keepAlive struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
}

// dialers returns n connections to addr, none dialled yet.
func dialers(addr string, n int) []*keepAlive {
	conns := make([]*keepAlive, n)
	for i := range conns {
		conns[i] = &keepAlive{addr: addr}
	}
	return conns
}

func closeAll(conns []*keepAlive) {
	for _, c := range conns {
		c.close()
	}
}

func (k *keepAlive) close() {
	if k.c != nil {
		_ = k.c.Close()
		k.c = nil
	}
}

// merge adds up samples taken at the same time; its Elapsed is the
// longest of theirs.
func merge(parts []sample) sample {
	out := sample{Statuses: map[int]int64{}}
	total := 0
	for _, r := range parts {
		total += len(r.Latencies)
	}
	out.Latencies = make([]int64, 0, total)
	for _, r := range parts {
		out.Elapsed = max(out.Elapsed, r.Elapsed)
		out.Requests += r.Requests
		out.Errors += r.Errors
		for s, c := range r.Statuses {
			out.Statuses[s] += c
		}
		out.Latencies = append(out.Latencies, r.Latencies...)
		if r.LastOK.After(out.LastOK) {
			out.LastOK = r.LastOK
		}
	}
	return out
}

// RandomKey as a target's key sends a new random key of the shape `caddy
// rpm key create` prints with every request: keys no store holds.
const RandomKey = "@random"

const (
	randomKeyPrefix = "sk-rpm-"
	randomKeyLen    = 40 // base62 characters after the prefix
	base62          = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// buildRequest returns the request bytes and, for RandomKey and key
// ranges, the offset and length of the part of the key that changes per
// request (else -1, 0).
func buildRequest(t target) (req []byte, keyAt, keyLen int) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rpm-bench\r\nAccept: */*\r\n", t.Path, t.Addr)
	keyAt = -1
	kr, _ := parseKeyRange(t.Key)
	switch {
	case t.Key == "":
	case t.Key == RandomKey:
		b.WriteString("Authorization: Bearer " + randomKeyPrefix)
		keyAt, keyLen = b.Len(), randomKeyLen
		b.WriteString(strings.Repeat("0", randomKeyLen) + "\r\n")
	case kr != nil:
		b.WriteString("Authorization: Bearer " + kr.prefix)
		keyAt, keyLen = b.Len(), kr.width()
		b.WriteString(strings.Repeat("0", keyLen) + "\r\n")
	default:
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", t.Key)
	}
	b.WriteString("\r\n")
	return b.Bytes(), keyAt, keyLen
}

// fillRandomKey writes randomKeyLen base62 characters at dst.
func fillRandomKey(dst []byte, rng *rand.ChaCha8) {
	var buf [8]byte
	for i := 0; i < len(dst); {
		_, _ = rng.Read(buf[:])
		for _, c := range buf {
			// 248 = 4 × 62: reject the rest so every character is equally likely.
			if c < 248 && i < len(dst) {
				dst[i] = base62[c%62]
				i++
			}
		}
	}
}

// worker is one connection's request loop.
func worker(k *keepAlive, next nextRequest, deadline time.Time) sample {
	s := sample{Statuses: map[int]int64{}, Latencies: make([]int64, 0, 1<<10)}
	if k.c != nil {
		_ = k.c.SetDeadline(deadline.Add(10 * time.Second))
	}
	for {
		req := next() // outside the timed part
		if req == nil {
			return s
		}
		t0 := time.Now()
		if !t0.Before(deadline) {
			return s
		}
		if k.c == nil {
			c, err := net.DialTimeout("tcp", k.addr, time.Second)
			if err != nil {
				s.Errors++
				time.Sleep(10 * time.Millisecond)
				continue
			}
			_ = c.SetDeadline(deadline.Add(10 * time.Second))
			k.c, k.br = c, bufio.NewReaderSize(c, 16<<10)
			t0 = time.Now()
		}
		status, closeConn, err := roundTrip(k.c, k.br, req)
		if err != nil {
			s.Errors++
			k.close()
			continue
		}
		now := time.Now()
		s.Latencies = append(s.Latencies, int64(now.Sub(t0)))
		if status == 200 {
			s.LastOK = now
		}
		s.Requests++
		s.Statuses[status]++
		if closeConn {
			k.close()
		}
	}
}

var errMalformed = errors.New("malformed response")

// roundTrip writes req and reads one HTTP/1.1 response, discarding the
// body. It understands Content-Length and chunked bodies.
func roundTrip(w io.Writer, br *bufio.Reader, req []byte) (status int, closeConn bool, err error) {
	if _, err := w.Write(req); err != nil {
		return 0, false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, errMalformed
	}
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeConn = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		err = discardChunked(br)
	case length >= 0:
		_, err = br.Discard(length)
	default: // body until EOF
		_, err = io.Copy(io.Discard, br)
		closeConn = true
	}
	return status, closeConn, err
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		sz, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(sz), 16, 64)
		if err != nil {
			return errMalformed
		}
		if n == 0 {
			for { // trailers up to the empty line
				line, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(line) <= 2 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}
