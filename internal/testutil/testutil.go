// Package testutil holds the small helpers that tests of several packages
// share, so that each exists once.
package testutil

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Ptr returns a pointer to a copy of v, for optional fields in literals.
func Ptr[T any](v T) *T { return &v }

// Itoa formats an id or a count in base 10.
func Itoa(v int64) string { return strconv.FormatInt(v, 10) }

// WaitFor calls cond until it returns nil and fails the test with cond's
// last error if that has not happened within timeout. It polls often
// enough for short timeouts and sparingly for long ones, because
// conditions in end-to-end tests cost an HTTP request each.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	interval := min(max(timeout/500, time.Millisecond), 20*time.Millisecond)
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// SyncBuffer is a bytes.Buffer that a child process may write while the
// test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Concurrently calls call n times in each of g goroutines and waits for
// them all. A goroutine stops at its first error; the first error of all
// is returned.
func Concurrently(g, n int, call func() error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if err := call(); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// FreePort returns a port drawn at random from [lo, hi) for which free
// reports true, and fails the test after 1000 draws without one. Each
// package's tests keep to their own range, and all stay below the
// kernel's ephemeral range (32768 on), where binds to port 0 land.
func FreePort(t testing.TB, lo, hi int, free func(port int) bool) int {
	t.Helper()
	for range 1000 {
		if p := lo + rand.IntN(hi-lo); free(p) {
			return p
		}
	}
	t.Fatalf("no free port in %d–%d", lo, hi-1)
	return 0
}

// CanListen reports whether host:port can be bound now ("" host: every
// address).
func CanListen(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}
