package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// minuteStart is a window start on the Local limiter's clock.
var minuteStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func localBackend(l *Local) backend {
	return backend{
		lim:  l,
		keys: Keys{Prefix: "local:"},
		count: func(t *testing.T, key string) int64 {
			t.Helper()
			counts, _, err := l.Peek(context.Background(), []string{key})
			if err != nil {
				t.Fatal(err)
			}
			return counts[0]
		},
		wait: func(*testing.T) {},
	}
}

func TestLocalSpecTable(t *testing.T) {
	clock := newFakeClock(minuteStart.Add(10 * time.Second))
	testSpecTable(t, localBackend(NewLocal(clock.Now)))
}

func TestLocalWindowRollover(t *testing.T) {
	clock := newFakeClock(minuteStart.Add(59*time.Second + 500*time.Millisecond))
	l := NewLocal(clock.Now)
	b := localBackend(l)
	cs := []Counter{userCounter(b.keys, 1, 2), groupCounter(b.keys, 1, 1, 5)}
	b.admit(t, cs, 2)
	b.refuse(t, cs, 0)
	res, _ := l.Check(context.Background(), cs)
	if res.ResetIn != 500*time.Millisecond {
		t.Fatalf("ResetIn %v, want 500ms", res.ResetIn)
	}
	clock.Add(499 * time.Millisecond)
	b.refuse(t, cs, 0)
	clock.Add(time.Millisecond) // the next minute starts
	if got := b.readCounts(t, cs); got[0] != 0 || got[1] != 0 {
		t.Fatalf("counts in the new window %v, want zeros", got)
	}
	res, err := l.Check(context.Background(), cs)
	if err != nil || !res.Allowed || res.Counts[0] != 1 || res.ResetIn != Window {
		t.Fatalf("first request of the new window: %+v, %v", res, err)
	}
	b.admit(t, cs, 1)
	b.refuse(t, cs, 0)
}

func TestLocalSweep(t *testing.T) {
	clock := newFakeClock(minuteStart)
	l := NewLocal(clock.Now)
	k := Keys{Prefix: "local:"}
	for uid := int64(1); uid <= 100; uid++ {
		if _, err := l.Check(context.Background(), []Counter{userCounter(k, uid, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	if l.Len() != 100 {
		t.Fatalf("Len %d, want 100", l.Len())
	}
	clock.Add(Window)
	l.Sweep()
	if l.Len() != 0 {
		t.Fatalf("Len after Sweep %d, want 0", l.Len())
	}
	for uid := int64(1); uid <= 10; uid++ {
		l.Check(context.Background(), []Counter{userCounter(k, uid, 10)})
	}
	clock.Add(Window)
	l.Check(context.Background(), []Counter{userCounter(k, 1, 10)}) // sweeps on the first call of a window
	if l.Len() != 1 {
		t.Fatalf("Len after a window change %d, want 1", l.Len())
	}
}

func TestLocalExactness(t *testing.T) {
	l := NewLocal(nil)
	k := Keys{Prefix: "local:"}
	// A fixed clock keeps all requests in one window.
	clock := newFakeClock(minuteStart)
	l.now = clock.Now
	cs := []Counter{groupCounter(k, 1, 1, 37), userCounter(k, 1, 1000)}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				if res, _ := l.Check(context.Background(), cs); res.Allowed {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 37 {
		t.Fatalf("admitted %d, want 37", admitted.Load())
	}
	counts, _, _ := l.Peek(context.Background(), []string{cs[0].Key, cs[1].Key})
	if counts[0] != 37 || counts[1] != 37 {
		t.Fatalf("counts %v, want [37 37]", counts)
	}
}

func TestLocalPeekNoKeys(t *testing.T) {
	clock := newFakeClock(minuteStart.Add(45 * time.Second))
	counts, reset, err := NewLocal(clock.Now).Peek(context.Background(), nil)
	if err != nil || len(counts) != 0 || reset != 15*time.Second {
		t.Fatalf("Peek(nil) = %v, %v, %v", counts, reset, err)
	}
}
