package e2e

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// tcpProxy forwards loopback connections to a target. Block makes the
// target unreachable: open connections are killed and new ones are closed
// at once; Unblock restores forwarding. It counts the bytes clients send,
// so a test can prove that no statement went to the target.
type tcpProxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu      sync.Mutex
	blocked bool
	conns   map[net.Conn]struct{}
	sent    atomic.Int64 // bytes from clients to the target
	wg      sync.WaitGroup
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			abort(c)
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			abort(c)
			continue
		}
		p.mu.Lock()
		if p.blocked { // blocked while dialling
			p.mu.Unlock()
			abort(c)
			abort(up)
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c, &p.sent)
		go p.pipe(c, up, nil)
	}
}

// pipe copies src to dst until either side ends, then closes both.
func (p *tcpProxy) pipe(dst, src net.Conn, count *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if count != nil {
				count.Add(int64(n))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				abort(dst)
			}
			break
		}
	}
	p.mu.Lock()
	delete(p.conns, src)
	delete(p.conns, dst)
	p.mu.Unlock()
	_ = src.Close()
	_ = dst.Close()
}

// Block kills every open connection and refuses new ones.
func (p *tcpProxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	for c := range p.conns {
		abort(c)
		delete(p.conns, c)
	}
}

// Unblock forwards new connections again.
func (p *tcpProxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

// Sent returns the bytes clients sent through the proxy so far.
func (p *tcpProxy) Sent() int64 { return p.sent.Load() }

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.Block()
	p.wg.Wait()
}

// abort closes c with a reset, as a dead peer would.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// proxiedDSN returns dsn with its host:port replaced by the proxy's, and
// the original host:port.
func proxiedDSN(t testing.TB, dsn string) (target string, via func(addr string) string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	target = u.Host
	return target, func(addr string) string {
		v := *u
		v.Host = addr
		return v.String()
	}
}

// TestTCPProxyBlock checks the proxy itself: forwarding, Block killing open
// connections and refusing new ones, Unblock.
func TestTCPProxyBlock(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p := newTCPProxy(t, ln.Addr().String())
	echo := func(c net.Conn) error {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		_, err := io.ReadFull(c, b)
		return err
	}
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c); err != nil {
		t.Fatalf("echo through proxy: %v", err)
	}
	p.Block()
	if err := echo(c); err == nil {
		t.Fatal("open connection survived Block")
	}
	c2, err := net.Dial("tcp", p.Addr)
	if err == nil {
		if err := echo(c2); err == nil {
			t.Fatal("new connection forwarded while blocked")
		}
		c2.Close()
	}
	p.Unblock()
	c3, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := echo(c3); err != nil {
		t.Fatalf("echo after Unblock: %v", err)
	}
	if p.Sent() < 8 {
		t.Fatalf("sent = %d, want >= 8", p.Sent())
	}
}
