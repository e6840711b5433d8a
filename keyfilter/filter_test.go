package keyfilter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
)

// keySet is a store stand-in for the source: a set of digests, a switch to
// make it fail, and an optional pause in the middle of a scan.
type keySet struct {
	mu    sync.Mutex
	keys  map[[32]byte]bool
	err   error
	scans atomic.Int64
	// midway, if set, is called once half the keys have been streamed.
	midway func()
}

func newKeySet(n int) *keySet {
	s := &keySet{keys: map[[32]byte]bool{}}
	for range n {
		s.keys[randomHash()] = true
	}
	return s
}

func (s *keySet) source(ctx context.Context, sized func(int), add func(*[32]byte)) error {
	s.scans.Add(1)
	s.mu.Lock()
	err, midway := s.err, s.midway
	keys := make([][32]byte, 0, len(s.keys))
	for k := range s.keys {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	sized(len(keys))
	for i := range keys {
		if i == len(keys)/2 && midway != nil {
			midway()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		add(&keys[i])
	}
	return nil
}

func (s *keySet) set(k [32]byte, present bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if present {
		s.keys[k] = true
	} else {
		delete(s.keys, k)
	}
}

func (s *keySet) all() [][32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][32]byte
	for k := range s.keys {
		out = append(out, k)
	}
	return out
}

// mustBuild builds f and fails the test if the build fails.
func mustBuild(t *testing.T, f *Filter) {
	t.Helper()
	if err := f.Build(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// wantAll fails the test with msg unless f admits every one of keys.
func wantAll(t *testing.T, f *Filter, keys [][32]byte, msg string) {
	t.Helper()
	for _, k := range keys {
		if !f.MayContain(&k) {
			t.Fatal(msg)
		}
	}
}

// rejected counts how many of n random digests f refuses.
func rejected(f *Filter, n int) int {
	r := 0
	for range n {
		h := randomHash()
		if !f.MayContain(&h) {
			r++
		}
	}
	return r
}

func TestFilterAdmitsEverythingUntilBuilt(t *testing.T) {
	var nilFilter *Filter
	h := randomHash()
	if !nilFilter.MayContain(&h) || nilFilter.Ready() {
		t.Fatal("a nil filter must admit everything")
	}
	nilFilter.Add(&h) // no panic
	nilFilter.Rebuild()

	s := newKeySet(10)
	s.err = errors.New("connection refused")
	var builds []error
	f := New(Config{Source: s.source, OnBuild: func(err error) { builds = append(builds, err) }})
	if n := rejected(f, 1000); n != 0 || f.Ready() {
		t.Fatalf("an unbuilt filter refused %d of 1000 keys", n)
	}
	if err := f.Build(context.Background()); err == nil {
		t.Fatal("a failing source built a filter")
	}
	if n := rejected(f, 1000); n != 0 || f.Ready() {
		t.Fatalf("after a failed first build the filter refused %d of 1000 keys", n)
	}
	if len(builds) != 1 || builds[0] == nil {
		t.Fatalf("OnBuild saw %v, want one error", builds)
	}
}

func TestFilterBuild(t *testing.T) {
	s := newKeySet(5000)
	f := New(Config{Source: s.source})
	mustBuild(t, f)
	if !f.Ready() {
		t.Fatal("not ready after a build")
	}
	wantAll(t, f, s.all(), "a key of the store is refused")
	if n := rejected(f, 10000); n < 9990 {
		t.Fatalf("only %d of 10000 unknown keys refused", n)
	}
	// Added keys are admitted at once.
	k := randomHash()
	if f.MayContain(&k) {
		t.Skip("a false positive for the new key; rerun")
	}
	f.Add(&k)
	if !f.MayContain(&k) {
		t.Fatal("an added key is refused")
	}
}

// TestFilterKeepsKeysAddedDuringABuild adds a key while a build streams:
// the store's view (taken before) lacks it, the notification arrives
// meanwhile, and the filter the build installs must hold it.
func TestFilterKeepsKeysAddedDuringABuild(t *testing.T) {
	s := newKeySet(1000)
	f := New(Config{Source: s.source})
	mustBuild(t, f)
	var added [][32]byte
	s.midway = func() {
		for range 100 {
			k := randomHash()
			added = append(added, k)
			f.Add(&k)
		}
	}
	mustBuild(t, f)
	wantAll(t, f, added, "a key added while the build streamed was lost")
	// Also on the first build, when there is no filter yet to add to.
	f = New(Config{Source: s.source})
	added = nil
	mustBuild(t, f)
	wantAll(t, f, added, "a key added while the first build streamed was lost")
	if len(added) == 0 {
		t.Fatal("the source did not pause midway")
	}
}

func TestFilterFailedBuildKeepsThePreviousFilter(t *testing.T) {
	s := newKeySet(100)
	f := New(Config{Source: s.source})
	mustBuild(t, f)
	keys := s.all()
	s.err = errors.New("down")
	if err := f.Build(context.Background()); err == nil {
		t.Fatal("want an error")
	}
	wantAll(t, f, keys, "a failed build lost a key")
	if n := rejected(f, 1000); n < 990 {
		t.Fatalf("after a failed build only %d of 1000 unknown keys refused", n)
	}
}

// TestFilterTooManyAddsDuringABuild: a build that could not remember every
// key added while it streamed is not installed.
func TestFilterTooManyAddsDuringABuild(t *testing.T) {
	s := newKeySet(10)
	f := New(Config{Source: s.source})
	mustBuild(t, f)
	before := f.cur.Load()
	s.midway = func() {
		for range maxPending + 1 {
			k := randomHash()
			f.Add(&k)
		}
	}
	if err := f.Build(context.Background()); err == nil {
		t.Fatal("a build that lost added keys succeeded")
	}
	if f.cur.Load() != before {
		t.Fatal("a build that lost added keys was installed")
	}
}

// TestFilterStartRebuilds runs the goroutine: a build on Rebuild, periodic
// builds that drop deleted keys, retries after a failure, a build when the
// filter passes its capacity, and its end with the context.
func TestFilterStartRebuilds(t *testing.T) {
	s := newKeySet(100)
	ctx, cancel := context.WithCancel(context.Background())
	f := New(Config{Source: s.source, Refresh: time.Hour})
	f.Start(ctx)
	time.Sleep(50 * time.Millisecond)
	if f.Ready() || s.scans.Load() != 0 {
		t.Fatal("Start built before Rebuild was called")
	}
	f.Rebuild()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if f.Ready() {
			return nil
		}
		return errors.New("still waiting for the build after Rebuild")
	})

	// Past capacity: the filter asks for a larger one.
	scans := s.scans.Load()
	for range MinCapacity {
		k := randomHash()
		s.set(k, true)
		f.Add(&k)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if b := f.cur.Load(); s.scans.Load() <= scans || b.Capacity() <= MinCapacity {
			return fmt.Errorf("no rebuild past capacity yet (capacity %d)", b.Capacity())
		}
		return nil
	})

	// A failing build is retried on its own.
	s.mu.Lock()
	s.err = errors.New("down")
	s.mu.Unlock()
	scans = s.scans.Load()
	f.Rebuild()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s.scans.Load() > scans {
			return nil
		}
		return errors.New("still waiting for the failing build")
	})
	s.mu.Lock()
	s.err = nil
	s.mu.Unlock()
	scans = s.scans.Load()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s.scans.Load() > scans {
			return nil
		}
		return errors.New("still waiting for the retry")
	})

	cancel()
	select {
	case <-f.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine did not end with its context")
	}
}

func TestFilterRefreshDropsDeletedKeys(t *testing.T) {
	s := newKeySet(100)
	ctx, cancel := context.WithCancel(context.Background())
	f := New(Config{Source: s.source, Refresh: 100 * time.Millisecond})
	f.Start(ctx)
	defer func() { cancel(); <-f.Done() }()
	f.Rebuild()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if f.Ready() {
			return nil
		}
		return errors.New("still waiting for the first build")
	})
	gone := s.all()[0]
	s.set(gone, false)
	if !f.MayContain(&gone) {
		t.Fatal("the filter lost a key before a rebuild")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !f.MayContain(&gone) {
			return nil
		}
		return errors.New("still waiting for a periodic rebuild without the deleted key")
	})
}

// TestFilterStopsDuringABuild ends the context while a build waits on the
// store: the goroutine ends anyway.
func TestFilterStopsDuringABuild(t *testing.T) {
	s := newKeySet(10)
	ctx, cancel := context.WithCancel(context.Background())
	blocked := make(chan struct{})
	s.midway = func() {
		close(blocked)
		<-ctx.Done()
	}
	f := New(Config{Source: s.source, Refresh: time.Hour})
	f.Start(ctx)
	f.Rebuild()
	<-blocked
	cancel()
	select {
	case <-f.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine did not end while a build was in progress")
	}
	if f.Ready() {
		t.Fatal("a cancelled build was installed")
	}
}
