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
)

// Listen implements Listener. It holds one connection taken from the pool
// (hijacked, so it never returns to the pool in LISTEN state), calls fn for
// every well-formed notification on the schema's channel (ChannelOf) and
// ignores malformed ones. It calls onListen after every successful LISTEN:
// with gap false the first time and true after a failure, since
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
	pc, err := p.pool.Acquire(ctx)
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
	if _, err := conn.Exec(ctx, "set application_name = 'caddy-rpm listener'"); err != nil {
		return fmt.Errorf("set application_name: %w", err)
	}
	ch, err := ChannelOf(ctx, conn)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "listen "+pgx.Identifier{ch}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	p.listenPID.Store(conn.PgConn().PID())
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		if ev, ok := ParseEvent(n.Payload); ok {
			fn(ev)
		}
	}
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
