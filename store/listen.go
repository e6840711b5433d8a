package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Channel is the NOTIFY channel the triggers of schema public send
// invalidations on. Other schemas use their own channel (see ChannelOf), so
// that instances on different schemas of one database do not invalidate each
// other's caches.
const Channel = "rpm_invalidate"

// ChannelOf returns the NOTIFY channel of the schema conn's search_path
// resolves to, as the schema's rpm_channel() names it; Channel if the schema
// predates that function.
func ChannelOf(ctx context.Context, conn *pgx.Conn) (string, error) {
	var ch string
	err := conn.QueryRow(ctx, "select rpm_channel()").Scan(&ch)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function
		return Channel, nil
	}
	if err != nil {
		return "", fmt.Errorf("read channel name: %w", err)
	}
	return ch, nil
}

const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// listenPingAfter is how long the listener waits for a notification
	// before it pings the server: a dead path (no reset, no answer) looks
	// just like a quiet channel until something is sent on it.
	listenPingAfter = 2 * time.Second
	// defaultListenTimeout is ListenTimeout's default.
	defaultListenTimeout = 2 * time.Second
)

// Listen implements Listener. It holds one connection taken from the pool
// (hijacked, so it never returns to the pool in LISTEN state), calls fn for
// every well-formed notification on the schema's channel (ChannelOf) and
// ignores malformed ones. After 2s without a notification it pings the
// server; a setup step or ping that gets no answer within ListenTimeout
// counts as a connection error. It calls onListen after every successful
// LISTEN: with gap false the first time and true after a failure, since
// notifications sent meanwhile are lost. On any connection error it
// reconnects with exponential backoff (100ms up to 5s). It returns when ctx
// is done.
func (p *Postgres) Listen(ctx context.Context, fn func(Event), onListen func(gap bool)) {
	log := p.Logger
	if log == nil {
		log = zap.NewNop()
	}
	backoff := listenBackoffMin
	failed := false
	for {
		listening := func() {
			if onListen != nil {
				onListen(failed)
			}
			if failed {
				log.Info("listening for invalidations again")
			}
			failed = false
			backoff = listenBackoffMin
		}
		err := p.listenOnce(ctx, fn, listening)
		if ctx.Err() != nil {
			return
		}
		failed = true
		log.Warn("invalidation listener failed; reconnecting",
			zap.Error(err), zap.Duration("backoff", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenOnce runs one LISTEN session until an error or the end of ctx.
// listening is called once LISTEN has succeeded.
func (p *Postgres) listenOnce(ctx context.Context, fn func(Event), listening func()) error {
	timeout := p.ListenTimeout
	if timeout <= 0 {
		timeout = defaultListenTimeout
	}
	setup, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pc, err := p.pool.Acquire(setup)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		p.listenPID.Store(0)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(setup, "set application_name = 'caddy-rpm listener'"); err != nil {
		return fmt.Errorf("set application_name: %w", err)
	}
	ch, err := ChannelOf(setup, conn)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(setup, "listen "+pgx.Identifier{ch}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	cancel()
	p.listenPID.Store(conn.PgConn().PID())
	listening()
	for {
		wait, stop := context.WithTimeout(ctx, listenPingAfter)
		n, err := conn.WaitForNotification(wait)
		quiet := wait.Err() != nil && ctx.Err() == nil
		stop()
		switch {
		case err == nil:
			if ev, ok := ParseEvent(n.Payload); ok {
				fn(ev)
			}
		case quiet:
			// Nothing arrived: make sure the server is still there. pgx
			// keeps the connection usable after a timed-out wait.
			if err := p.ping(ctx, conn, timeout); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// ping checks that the server answers on conn within timeout.
func (p *Postgres) ping(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		return fmt.Errorf("ping listener connection: %w", err)
	}
	return nil
}

// Payload is the notification payload of e, what ParseEvent parses: the
// format of Postgres notifications and of the Redis invalidation channel.
func (e Event) Payload() string {
	if e.Scope == ScopeAll {
		return string(ScopeAll)
	}
	p := string(e.Scope) + ":" + strconv.FormatInt(e.ID, 10)
	if e.Scope == ScopeKey && e.KeyHash != "" {
		p += ":" + e.KeyHash
	}
	return p
}

// ParseEvent parses a notification payload: "all", "user:<id>",
// "group:<id>" or "key:<id>[:<hex sha-256>]".
func ParseEvent(payload string) (Event, bool) {
	if payload == string(ScopeAll) {
		return Event{Scope: ScopeAll}, true
	}
	scope, rest, ok := strings.Cut(payload, ":")
	if !ok {
		return Event{}, false
	}
	var hash string
	if scope == string(ScopeKey) {
		rest, hash, _ = strings.Cut(rest, ":")
		var b [32]byte
		if hash != "" && !decodeKeyHash(&b, hash) {
			return Event{}, false
		}
		hash = strings.ToLower(hash)
	} else if scope != string(ScopeUser) && scope != string(ScopeGroup) {
		return Event{}, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return Event{}, false
	}
	return Event{Scope: Scope(scope), ID: id, KeyHash: hash}, true
}
