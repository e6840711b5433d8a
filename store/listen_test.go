package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

func TestParseEvent(t *testing.T) {
	h := store.HashKey("k")
	for _, tc := range []struct {
		in   string
		want store.Event
		ok   bool
	}{
		{"all", store.Event{Scope: store.ScopeAll}, true},
		{"user:12", store.Event{Scope: store.ScopeUser, ID: 12}, true},
		{"group:3", store.Event{Scope: store.ScopeGroup, ID: 3}, true},
		{"key:7:" + h, store.Event{Scope: store.ScopeKey, ID: 7, KeyHash: h}, true},
		{"key:7", store.Event{Scope: store.ScopeKey, ID: 7}, true},
		{"key:7:xyz", store.Event{}, false},
		{"user:", store.Event{}, false},
		{"user:abc", store.Event{}, false},
		{"user:1:2", store.Event{}, false},
		{"thing:1", store.Event{}, false},
		{"", store.Event{}, false},
		{"ALL", store.Event{}, false},
	} {
		got, ok := store.ParseEvent(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseEvent(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestListenReconnects(t *testing.T) {
	pool, st := newPostgres(t)
	u := userWithID(t, pool, randomID(), 1)

	events := make(chan store.Event, 100)
	gaps := make(chan bool, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.Listen(ctx,
			func(e store.Event) {
				if e.Scope == store.ScopeUser && e.ID == u {
					events <- e
				}
			},
			func(gap bool) { gaps <- gap })
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Listen did not return after cancel")
		}
	}()

	waitPID := func(not uint32) uint32 {
		t.Helper()
		var pid uint32
		testutil.WaitFor(t, 10*time.Second, func() error {
			if pid = st.ListenPID(); pid == 0 || pid == not {
				return errors.New("listener did not connect")
			}
			return nil
		})
		return pid
	}
	expectEvent := func(limit int64) {
		t.Helper()
		storetest.Exec(t, pool, `update rpm_users set rpm_limit = $2 where id = $1`, u, limit)
		select {
		case e := <-events:
			if e != (store.Event{Scope: store.ScopeUser, ID: u}) {
				t.Fatalf("event %+v", e)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}

	pid := waitPID(0)
	expectEvent(2)
	select {
	case gap := <-gaps:
		if gap {
			t.Fatal("the first LISTEN reported a gap")
		}
	default:
		t.Fatal("onListen not called after the first LISTEN")
	}
	select {
	case gap := <-gaps:
		t.Fatalf("onListen(%v) called again without a reconnect", gap)
	default:
	}

	var killed bool
	if err := pool.QueryRow(context.Background(), `select pg_terminate_backend($1)`, int32(pid)).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	select {
	case gap := <-gaps:
		if !gap {
			t.Fatal("the LISTEN after a reconnect reported no gap")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("onListen not called after the backend was killed")
	}
	if newPID := waitPID(pid); newPID == pid {
		t.Fatal("same backend after reconnect")
	}
	expectEvent(3)
}

// TestListenPingsWhenQuiet checks that a quiet listener pings its server
// (so a dead connection would be noticed) and that its connection keeps
// delivering notifications after the waits that preceded the pings.
func TestListenPingsWhenQuiet(t *testing.T) {
	pool, st := newPostgres(t)
	st.ListenTimeout = time.Second
	u := userWithID(t, pool, randomID(), 1)

	events := make(chan store.Event, 10)
	gaps := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.Listen(ctx, func(e store.Event) {
			if e.Scope == store.ScopeUser && e.ID == u {
				events <- e
			}
		}, func(gap bool) {
			if gap {
				gaps <- struct{}{}
			}
		})
	}()
	defer func() {
		cancel()
		<-done
	}()

	var pid uint32
	testutil.WaitFor(t, 10*time.Second, func() error {
		if pid = st.ListenPID(); pid == 0 {
			return errors.New("listener did not connect")
		}
		return nil
	})
	// The listener's backend shows the ping as its last statement once a
	// quiet period has passed.
	testutil.WaitFor(t, 10*time.Second, func() error {
		var last string
		if err := pool.QueryRow(context.Background(),
			`select query from pg_stat_activity where pid = $1`, int32(pid)).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if last != "-- ping" {
			return fmt.Errorf("the quiet listener's last statement is %q, want a ping", last)
		}
		return nil
	})
	time.Sleep(2500 * time.Millisecond) // another quiet period and ping
	storetest.Exec(t, pool, `update rpm_users set rpm_limit = 2 where id = $1`, u)
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("no event after quiet periods")
	}
	if got := st.ListenPID(); got != pid {
		t.Fatalf("listener reconnected (pid %d -> %d) though its server answered", pid, got)
	}
	select {
	case <-gaps:
		t.Fatal("onGap called without a reconnect")
	default:
	}
}

// TestEventPayloadRoundTrip: what Payload writes, ParseEvent reads back,
// so publishers and the listener cannot disagree on the format.
func TestEventPayloadRoundTrip(t *testing.T) {
	h := store.HashKey("k")
	for _, ev := range []store.Event{
		{Scope: store.ScopeAll},
		{Scope: store.ScopeUser, ID: 12},
		{Scope: store.ScopeGroup, ID: 3},
		{Scope: store.ScopeKey, ID: 7},
		{Scope: store.ScopeKey, ID: 7, KeyHash: h},
	} {
		got, ok := store.ParseEvent(ev.Payload())
		if !ok || got != ev {
			t.Errorf("ParseEvent(%q) = %+v, %v; want %+v", ev.Payload(), got, ok, ev)
		}
	}
}
