//go:build callgrind

package limiter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCallgrindDistinctChecks counts the instructions Redis runs per check
// of a distinct user, the figure the README's key layout section quotes:
//
//	go test -tags callgrind -run Callgrind -v ./limiter
//
// Instruction counts hold still where CPU times on a shared machine do
// not. For calls of 1, 8 and 32 checks it starts a redis-server under
// valgrind --tool=callgrind, gives 16,000 users (a user and a group
// counter each) a hash of an earlier window of its block, as
// BenchmarkDistinctChecks/earlier does, zeroes the counts, sends 16,000
// checks of distinct users and logs the instructions per check. It needs
// valgrind (callgrind_control) and redis-server; the callgrind build tag
// keeps it out of the normal test run.
func TestCallgrindDistinctChecks(t *testing.T) {
	for _, tool := range []string{"valgrind", "callgrind_control", "redis-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
	}
	for _, perCall := range []int{1, 8, 32} {
		t.Run(fmt.Sprintf("calls of %d", perCall), func(t *testing.T) {
			const checks = 16000
			ctx := context.Background()
			addr, pid, out := startCallgrindRedis(t)
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			keys := Keys{Prefix: "callgrind:"}
			r := NewRedis(c)
			defer r.Close()
			if err := r.Load(ctx); err != nil {
				t.Fatal(err)
			}
			sets := distinctUserSets(keys, checks)
			writeEarlierWindow(t, r, c, sets)
			callgrindControl(t, "-z", pid)
			batch := make([]*pendingCheck, perCall)
			for i := 0; i < checks; i += perCall {
				for j := range batch {
					batch[j] = &pendingCheck{ctx: ctx, counters: sets[i+j], done: make(chan struct{})}
				}
				r.run(ctx, batch)
				for _, p := range batch {
					if p.err != nil || !p.res.Allowed {
						t.Fatalf("check: allowed %v, err %v", p.res.Allowed, p.err)
					}
				}
			}
			callgrindControl(t, "-d", pid)
			t.Logf("%d instructions per check", callgrindTotal(t, out)/checks)
		})
	}
}

// startCallgrindRedis starts redis-server under callgrind and returns its
// address, its pid and the path its first dump goes to.
func startCallgrindRedis(t *testing.T) (addr, pid, dump string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command("valgrind", "--tool=callgrind", "--callgrind-out-file="+filepath.Join(dir, "callgrind.out"),
		"redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server under callgrind did not answer PING within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid = strconv.Itoa(cmd.Process.Pid)
	return addr, pid, filepath.Join(dir, "callgrind.out.1")
}

func callgrindControl(t *testing.T, op, pid string) {
	t.Helper()
	if out, err := exec.Command("callgrind_control", op, pid).CombinedOutput(); err != nil {
		t.Fatalf("callgrind_control %s %s: %v: %s", op, pid, err, out)
	}
}

// callgrindTotal returns the instructions of a callgrind dump (its
// "summary:" line).
func callgrindTotal(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "summary: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("%s: summary %q: %v", path, v, err)
			}
			return n
		}
	}
	t.Fatalf("%s: no summary line (%v)", path, s.Err())
	return 0
}
