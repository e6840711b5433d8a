package e2e

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// tcpProxy forwards loopback connections to a target. Block makes the
// target unreachable: open connections are killed and new ones are closed
// at once; Unblock restores forwarding. Stall makes the target silent
// instead, as a dead host or a broken network path does: nothing is closed,
// but no byte is relayed any more; Unstall relays new connections again.
// It counts the bytes clients send, so a test can prove that no statement
// went to the target; the store listener's keep-alive pings (pgPing, sent
// after 2 s without a notification) are not counted, as they read nothing.
type tcpProxy struct {
	Addr   string
	target string
	ln     net.Listener
	done   chan struct{} // closed when the proxy closes

	mu      sync.Mutex
	blocked bool
	stalled bool
	conns   map[net.Conn]*proxyPair
	sent    atomic.Int64 // bytes from clients to the target
	wg      sync.WaitGroup
}

// proxyPair is one relayed connection: client and target side.
type proxyPair struct {
	// dead is set by Stall: the pair relays nothing ever again.
	dead atomic.Bool
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{Addr: ln.Addr().String(), target: target, ln: ln, done: make(chan struct{}),
		conns: map[net.Conn]*proxyPair{}}
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
		if p.stalled {
			// Accepted and never answered; closed with the proxy.
			pr := &proxyPair{}
			pr.dead.Store(true)
			p.conns[c] = pr
			p.mu.Unlock()
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
		pr := &proxyPair{}
		pr.dead.Store(p.stalled) // stalled while dialling
		p.conns[c], p.conns[up] = pr, pr
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pr, up, c, &p.sent)
		go p.pipe(pr, c, up, nil)
	}
}

// pipe copies src to dst until either side ends, then closes both. Once
// the pair is dead it relays nothing, not even the end of a side: what it
// read is lost, as on a broken path, and both sides stay open until the
// proxy closes.
func (p *tcpProxy) pipe(pr *proxyPair, dst, src net.Conn, count *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if pr.dead.Load() {
			<-p.done
			break
		}
		if n > 0 {
			if count != nil && !bytes.Equal(buf[:n], pgPing) {
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

// Stall stops relaying without closing anything: open connections stay
// open and silent for good (like connections whose path lost its state,
// they stay dead after Unstall), and new ones are accepted but never
// answered.
func (p *tcpProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
	for _, pr := range p.conns {
		pr.dead.Store(true)
	}
}

// Unstall relays new connections again.
func (p *tcpProxy) Unstall() {
	p.mu.Lock()
	p.stalled = false
	p.mu.Unlock()
}

// pgPing is what pgx's Ping sends: a simple query of the empty statement
// "-- ping" ('Q', length 12, the text and its terminating zero).
var pgPing = []byte("Q\x00\x00\x00\x0c-- ping\x00")

// Sent returns the bytes clients sent through the proxy so far, pings aside.
func (p *tcpProxy) Sent() int64 { return p.sent.Load() }

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	close(p.done)
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

// proxiedSchema creates a schema (see storetest.NewSchema) and puts a
// tcpProxy in front of its Postgres server, so that a test can cut Caddy
// off from the database while it seeds and checks through the pool. It
// returns the pool, the proxy and the schema's dsn with the proxy's
// address in place of the server's.
func proxiedSchema(t testing.TB) (*pgxpool.Pool, *tcpProxy, string) {
	t.Helper()
	pool, dsn := storetest.NewSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	pg := newTCPProxy(t, u.Host)
	u.Host = pg.Addr
	return pool, pg, u.String()
}
