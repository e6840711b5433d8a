// Package caddyrpm provides the rpm Caddy app and the http.handlers.rpm
// middleware: API-key authentication against cached auth snapshots and
// per-user, per-group and per-(user, group) requests-per-minute limits.
// It is the Caddy glue around the gateway, which decides: configuration
// (Caddyfile, validation, defaults), connections shared across reloads,
// placeholders, metrics and the HTTP answers to the gateway's decisions.
package caddyrpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddyrpm/caddy-rpm/gateway"
	"github.com/caddyrpm/caddy-rpm/keyfilter"
	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/snapshot"
	"github.com/caddyrpm/caddy-rpm/store"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the rpm app. It connects the store and Redis (shared across
// reloads), builds the limiter and the gateway of the configuration over
// them, and is shared by every rpm handler of the configuration; the admin
// modules reach the gateway through it.
type App struct {
	// Postgres is the DSN of the Postgres database that is the source of
	// truth. Exactly one of Postgres and KeysFile must be set.
	Postgres string `json:"postgres,omitempty"`

	// AutoMigrate applies the embedded schema migrations to Postgres at
	// start. Default: false (run `caddy rpm migrate` instead).
	AutoMigrate bool `json:"auto_migrate,omitempty"`

	// KeysFile is the path of a read-only JSON store, used instead of
	// Postgres to run without any server.
	KeysFile string `json:"keys_file,omitempty"`

	// StoreTimeout bounds every Postgres call on the request path: a
	// request waits at most this long for a snapshot load, then gets a
	// stale snapshot (see CacheOptions.StaleIfError) or 503. It also bounds
	// the invalidation listener's setup and pings. Unless the DSN sets
	// connect_timeout, new connections get the larger of StoreTimeout and
	// 5s to connect. Default: 2s.
	StoreTimeout caddy.Duration `json:"store_timeout,omitempty"`

	// Redis is the Redis server: one redis:// URL (its query options, such
	// as pool_size, apply) or host:port; with RedisCluster, the seed nodes
	// of a Redis Cluster. Default: none, which keeps counters and the cache
	// in process (single instance only).
	Redis []string `json:"redis,omitempty"`

	// RedisCluster treats the Redis addresses as a Redis Cluster.
	// Default: false.
	RedisCluster bool `json:"redis_cluster,omitempty"`

	// RedisTimeout bounds every Redis call on the request path.
	// Default: 100ms.
	RedisTimeout caddy.Duration `json:"redis_timeout,omitempty"`

	// Reservations turns reservations of the Redis limiter on or off: a
	// check that finds every counter of a request far from its limit may
	// count up to 64 requests at once, and this instance admits the next
	// requests of the same counters from them without a Redis call (see
	// the README, "Reservations"). Without Redis it has no effect.
	// Default: on, unless ReservationTTL is 0.
	Reservations *bool `json:"reservations,omitempty"`

	// ReservationTTL is how long a reservation may go unused before its
	// units are handed back. 0 turns reservations off, as Reservations
	// false does (and then Reservations true is an error). Default: 250ms.
	ReservationTTL *caddy.Duration `json:"reservation_ttl,omitempty"`

	// OnRedisError is "open" (admit requests when Redis cannot be asked)
	// or "closed" (answer 503). Default: open.
	OnRedisError string `json:"on_redis_error,omitempty"`

	// RedisKeyPrefix prefixes every Redis key and channel this app uses; the
	// store's identity follows it (see RedisPrefix), so deployments with
	// different stores never share Redis state. At most 64 letters, digits
	// and ":", ".", "_", "-", "/". Default: "rpm:".
	RedisKeyPrefix string `json:"key_prefix,omitempty"`

	// ConcurrencyLease is how long a concurrency slot stays taken in Redis
	// without its instance renewing it (renewals run every quarter of it,
	// at most every 5s, while the request is in flight). It bounds how long
	// the slots of an instance that died (killed, lost its network) stay
	// taken. At least 1s. Default: 20s.
	ConcurrencyLease caddy.Duration `json:"concurrency_lease,omitempty"`

	// Cache configures the snapshot caches. Default: see CacheOptions.
	Cache *CacheOptions `json:"cache,omitempty"`

	// AdminAuthToken, when set, is the bearer token every admin route
	// requires. It may be a placeholder such as {env.RPM_ADMIN_TOKEN}; one
	// that resolves to an empty string is an error, not "no token". The
	// value shows in Caddy's GET /config/ to whoever can reach the admin
	// endpoint; AdminTokenFile keeps it out. Default: none.
	AdminAuthToken string `json:"admin_token,omitempty"`

	// AdminTokenFile is the path of a file holding the admin token (its
	// content, trimmed of surrounding white space), read when the config
	// loads. Exclusive with AdminAuthToken. Default: none.
	AdminTokenFile string `json:"admin_token_file,omitempty"`

	// source is the store snapshots come from; writable the same store
	// when admin changes are possible (Postgres), nil for the keys file.
	source   store.Source
	writable store.Writable
	redis    redis.UniversalClient
	limiter  limiter.Acquirer
	// breaker guards Redis; nil without Redis.
	breaker *limiter.Guarded
	// counterKeys names the rate-limit counters.
	counterKeys limiter.Keys
	prefix      string // of every Redis key and channel (RedisPrefix); key_prefix alone without Redis
	gateway     *gateway.Gateway
	metrics     *metrics
	logger      *zap.Logger
	ctx         caddy.Context
	// adminToken is the resolved admin token, "" for none.
	adminToken string
	closers    []func()
	cancel     context.CancelFunc

	// keyFilter holds the hashes of every valid key, so unknown keys are
	// refused without a lookup; shared across reloads for Postgres.
	keyFilter *keyfilter.Filter

	// shadowLog throttles the log lines of shadow-mode refusals.
	shadowLog *shadowLog
}

// CacheOptions configures the L1 (in-process) and L2 (Redis) snapshot
// caches.
type CacheOptions struct {
	// L1Size is the maximum number of snapshots kept in process, about
	// 273 bytes each. Default: 1048576 (about 275 MiB when full).
	L1Size int `json:"l1_size,omitempty"`
	// L1TTL is how long an in-process snapshot is fresh: a safety net, as
	// invalidations are pushed; a snapshot read in the second half of it
	// is reloaded in the background. Default: 5m.
	L1TTL caddy.Duration `json:"l1_ttl,omitempty"`
	// L2TTL is how long a snapshot lives in Redis. Default: 5m.
	L2TTL caddy.Duration `json:"l2_ttl,omitempty"`
	// NegativeTTL is how long an unknown key that passed the key filter
	// is remembered as unknown, in process only (never in Redis).
	// Default: 30s.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
	// JitterPercent spreads every TTL by up to this percentage either way;
	// 0 turns jitter off. Default: 10.
	JitterPercent *float64 `json:"jitter_percent,omitempty"`
	// StaleIfError is how long past its TTL an in-process snapshot may
	// still be served while the store is unreachable. Default: 10m.
	StaleIfError caddy.Duration `json:"stale_if_error,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "rpm",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets defaults, validates (see Validate), and connects (lazily) to the store
// and Redis, reusing connections of a previous configuration.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	if err := a.setDefaults(); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	m, err := registerMetrics(ctx.GetMetricsRegistry())
	if err != nil {
		return err
	}
	a.metrics = m
	a.shadowLog = new(shadowLog)
	if err := a.provisionStore(ctx); err != nil {
		return err
	}
	if err := a.provisionKeyFilter(ctx); err != nil {
		return err
	}
	if err := a.provisionRedis(ctx); err != nil {
		return err
	}
	if err := a.provisionNamespace(ctx); err != nil {
		return err
	}
	a.provisionLimiter()
	return a.provisionGateway()
}

func (a *App) setDefaults() error {
	// Secrets and addresses may come from the environment: {env.DATABASE_URL}.
	repl := caddy.NewReplacer()
	a.Postgres = repl.ReplaceKnown(a.Postgres, "")
	a.KeysFile = repl.ReplaceKnown(a.KeysFile, "")
	for i, addr := range a.Redis {
		a.Redis[i] = repl.ReplaceKnown(addr, "")
	}
	if err := a.resolveAdminToken(repl); err != nil {
		return err
	}
	if a.RedisTimeout <= 0 {
		a.RedisTimeout = caddy.Duration(100 * time.Millisecond)
	}
	if a.ReservationTTL == nil {
		ttl := caddy.Duration(limiter.DefaultReservationTTL)
		a.ReservationTTL = &ttl
	}
	if a.Reservations == nil {
		// reservation_ttl 0 is the older way to turn them off.
		on := *a.ReservationTTL != 0
		a.Reservations = &on
	}
	setDuration(&a.StoreTimeout, 2*time.Second)
	setDuration(&a.ConcurrencyLease, limiter.DefaultLease)
	if a.OnRedisError == "" {
		a.OnRedisError = "open"
	}
	if a.RedisKeyPrefix == "" {
		a.RedisKeyPrefix = "rpm:"
	}
	if a.Cache == nil {
		a.Cache = new(CacheOptions)
	}
	c := a.Cache
	if c.L1Size <= 0 {
		c.L1Size = 1 << 20
	}
	setDuration(&c.L1TTL, 5*time.Minute)
	setDuration(&c.L2TTL, 5*time.Minute)
	setDuration(&c.NegativeTTL, 30*time.Second)
	setDuration(&c.StaleIfError, 10*time.Minute)
	if c.JitterPercent == nil {
		c.JitterPercent = new(float64)
		*c.JitterPercent = 10
	}
	return nil
}

// maxAdminTokenFile bounds what is read of admin_token_file.
const maxAdminTokenFile = 4096

// resolveAdminToken sets adminToken from admin_token or admin_token_file.
// A token that resolves to nothing is an error: silently running the admin
// API without authentication because a variable is unset would be worse.
// The exported field keeps the configured text (the placeholder).
func (a *App) resolveAdminToken(repl *caddy.Replacer) error {
	switch {
	case a.AdminAuthToken != "" && a.AdminTokenFile != "":
		return errors.New("rpm: admin_token and admin_token_file are exclusive; set one")
	case a.AdminAuthToken != "":
		tok := repl.ReplaceKnown(a.AdminAuthToken, "")
		if tok == "" {
			return fmt.Errorf("rpm: admin_token %q resolves to an empty string; set the variable or remove admin_token", a.AdminAuthToken)
		}
		if strings.TrimSpace(tok) != tok {
			// Clients' tokens are trimmed, so such a token could never match.
			return errors.New("rpm: admin_token must not begin or end with white space")
		}
		a.adminToken = tok
	case a.AdminTokenFile != "":
		path := repl.ReplaceKnown(a.AdminTokenFile, "")
		tok, err := readTokenFile(path)
		if err != nil {
			return fmt.Errorf("rpm: admin_token_file: %w", err)
		}
		a.adminToken = tok
	}
	return nil
}

// readTokenFile returns the trimmed content of a token file, which must
// not be empty.
func readTokenFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("the path resolves to an empty string")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAdminTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxAdminTokenFile {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxAdminTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

func setDuration(d *caddy.Duration, def time.Duration) {
	if *d <= 0 {
		*d = caddy.Duration(def)
	}
}

// provisionGateway builds the core of this configuration over what the
// other provision steps made.
func (a *App) provisionGateway() error {
	c := a.Cache
	m := a.metrics
	g, err := gateway.New(gateway.Config{
		Source:      a.source,
		Writable:    a.writable,
		Limiter:     a.limiter,
		Breaker:     a.breaker,
		CounterKeys: a.counterKeys,
		FailClosed:  a.OnRedisError == "closed",
		Cache: snapshot.CacheConfig{
			L1Size:       c.L1Size,
			L1TTL:        time.Duration(c.L1TTL),
			L2TTL:        time.Duration(c.L2TTL),
			NegativeTTL:  time.Duration(c.NegativeTTL),
			Jitter:       *c.JitterPercent / 100,
			StaleIfError: time.Duration(c.StaleIfError),
			L2Prefix:     a.prefix + "snap:",
			L2Timeout:    time.Duration(a.RedisTimeout),
			LoadTimeout:  time.Duration(a.StoreTimeout),
		},
		CacheHooks: snapshot.CacheHooks{
			Hit:      m.cacheHit,
			Miss:     func(layer string) { m.cacheMisses.WithLabelValues(layer).Inc() },
			Load:     func() { m.storeLoads.Inc() },
			Reload:   func() { m.storeReloads.Inc() },
			Stale:    func() { m.staleServed.Inc() },
			L2Errors: func() { m.redisErrors.Inc() },
		},
		Redis:        a.redis,
		Channel:      a.prefix + "invalidate",
		KeyFilter:    a.keyFilter,
		Logger:       a.logger,
		OnStoreError: func() { m.storeErrors.Inc() },
		OnInvalidate: func(scope gateway.Scope, _ int64, origin string) {
			m.invalidations.WithLabelValues(string(scope), origin).Inc()
		},
	})
	if err != nil {
		return fmt.Errorf("rpm: %w", err)
	}
	a.gateway = g
	return nil
}

// Start begins listening for invalidations.
func (a *App) Start() error {
	ctx, cancel := context.WithCancel(a.ctx)
	a.cancel = cancel
	a.gateway.Run(ctx)
	return nil
}

// Stop ends the listeners. Shared connections are released in Cleanup.
func (a *App) Stop() error {
	if a.cancel != nil {
		a.cancel()
	}
	return nil
}

// Cleanup releases this configuration's hold on shared connections.
func (a *App) Cleanup() error {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
	return nil
}

// Gateway returns the core of this configuration. With AdminToken it is
// what the admin module needs from the app.
func (a *App) Gateway() *gateway.Gateway { return a.gateway }

// AdminToken returns the admin bearer token, "" if none.
func (a *App) AdminToken() string { return a.adminToken }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
