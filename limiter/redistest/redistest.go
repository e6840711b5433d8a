// Package redistest starts throwaway redis-server processes, a single node
// or a Redis Cluster, for tests. Tests skip when redis-server (or, for a
// cluster, redis-cli) is not installed.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is a redis-server child process on a fixed loopback port. It is
// killed in the test's cleanup.
type Server struct {
	// Addr is host:port of the server.
	Addr string
	// Port is its TCP port.
	Port int

	t    testing.TB
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *testutil.SyncBuffer
}

// StartServer starts a redis-server without persistence on a free port.
// extra are additional redis-server arguments.
func StartServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	requireBinary(t, "redis-server")
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port := freePort(t)
		s := &Server{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Port: port,
			t:    t,
			args: append([]string{
				"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--save", "", "--appendonly", "no", "--daemonize", "no",
				"--dir", dir,
			}, extra...),
		}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// Stop kills the server and waits for it to exit. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused process dies only once continued
	<-s.exited
	s.cmd = nil
}

// Pause stops the server process (SIGSTOP) so it accepts connections but
// answers nothing, like a hung server; Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig os.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: signal %s: not running", s.Addr)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: signal %s: %v", s.Addr, err)
	}
}

// Restart starts the server again on the same port after Stop.
func (s *Server) Restart() {
	s.t.Helper()
	var err error
	for range 50 { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart %s: %v", s.Addr, err)
}

// start runs redis-server and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("%s already running", s.Addr)
	}
	out := new(testutil.SyncBuffer)
	cmd := exec.Command("redis-server", s.args...)
	cmd.Stdout, cmd.Stderr = out, out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitPing(s.Addr, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%w; output: %s", err, strings.TrimSpace(out.String()))
	}
	s.cmd, s.exited, s.out = cmd, exited, out
	return nil
}

// waitPing polls addr until it answers PING, the process exits or
// startTimeout passes.
func waitPing(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited", addr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s: no PING answer within %v: %w", addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartCluster starts a Redis Cluster of three masters without replicas,
// waits until every node reports cluster_state:ok, and returns the node
// addresses. The nodes are killed in the test's cleanup.
func StartCluster(t testing.TB) []string {
	t.Helper()
	return Addrs(StartClusterNodes(t))
}

// Addrs returns the addresses of servers.
func Addrs(servers []*Server) []string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr
	}
	return addrs
}

// StartClusterNodes is StartCluster returning the nodes' servers, for tests
// that pause or stop one.
func StartClusterNodes(t testing.TB) []*Server {
	t.Helper()
	requireBinary(t, "redis-server")
	requireBinary(t, "redis-cli")
	nodes := make([]*Server, 3)
	for i := range nodes {
		dir := t.TempDir()
		nodes[i] = StartServer(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", dir+"/nodes.conf",
			"--cluster-node-timeout", "5000",
		)
	}
	addrs := Addrs(nodes)
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		waitClusterOK(t, a, len(addrs))
	}
	return nodes
}

// waitClusterOK waits until the node at addr reports cluster_state:ok and
// knows all n nodes.
func waitClusterOK(t testing.TB, addr string, n int) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	want := "cluster_known_nodes:" + strconv.Itoa(n)
	deadline := time.Now().Add(30 * time.Second)
	var info string
	for time.Now().Before(deadline) {
		var err error
		info, err = c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("redistest: cluster node %s not ready:\n%s", addr, info)
}

func requireBinary(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("redistest: %s not installed: %v", name, err)
	}
}

// freePort returns a port p in 10000–21999 such that p and p+10000 (the
// cluster bus port) can be bound on loopback.
func freePort(t testing.TB) int {
	t.Helper()
	return testutil.FreePort(t, 10000, 22000, func(p int) bool {
		return testutil.CanListen("127.0.0.1", p) && testutil.CanListen("127.0.0.1", p+10000)
	})
}
