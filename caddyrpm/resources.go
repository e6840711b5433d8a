package caddyrpm

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter"
	"github.com/caddyrpm/caddy-rpm/store"
)

// minConnectTimeout is the least connect timeout of the Postgres pool when
// the DSN sets none: a slow but working connection setup (TLS, SCRAM over a
// long path) still completes in the background for the next request.
const minConnectTimeout = 5 * time.Second

// connections holds what survives config reloads: database pools, Redis
// clients and limiter state (local counters, deny cache, breaker), keyed by
// their configuration, so a reload neither reconnects nor resets counters.
var connections = caddy.NewUsagePool()

type pooled[T any] struct {
	value T
	close func()
}

func (p pooled[T]) Destruct() error {
	if p.close != nil {
		p.close()
	}
	return nil
}

// share loads or creates the resource named key and schedules its release
// at Cleanup.
func share[T any](a *App, key string, create func() (T, func(), error)) (T, error) {
	v, _, err := connections.LoadOrNew(key, func() (caddy.Destructor, error) {
		value, closeFn, err := create()
		if err != nil {
			return nil, err
		}
		return pooled[T]{value: value, close: closeFn}, nil
	})
	if err != nil {
		var zero T
		return zero, err
	}
	a.closers = append(a.closers, func() { _, _ = connections.Delete(key) })
	return v.(pooled[T]).value, nil
}

func (a *App) provisionStore(ctx caddy.Context) error {
	if a.KeysFile != "" {
		// The file is reread on every config load, so a reload picks up edits.
		f, err := store.LoadFile(a.KeysFile)
		if err != nil {
			return fmt.Errorf("rpm: keys_file: %w", err)
		}
		a.source = f
		return nil
	}
	connectTimeout := max(minConnectTimeout, time.Duration(a.StoreTimeout))
	key := fmt.Sprintf("pg|%s|%s", connectTimeout, a.Postgres)
	pool, err := share(a, key, func() (*pgxpool.Pool, func(), error) {
		cfg, err := pgxpool.ParseConfig(a.Postgres)
		if err != nil {
			return nil, nil, fmt.Errorf("parse postgres dsn: %w", err)
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "caddy-rpm"
		if cfg.ConnConfig.ConnectTimeout <= 0 {
			// pgxpool's default is 2 minutes, and a connect it starts goes
			// on after the request that wanted it gave up: against a dead
			// path, such connects would hold the pool's slots long after
			// the database answers again.
			cfg.ConnConfig.ConnectTimeout = connectTimeout
		}
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("open postgres pool: %w", err)
		}
		return p, p.Close, nil
	})
	if err != nil {
		return fmt.Errorf("rpm: postgres: %w", err)
	}
	if a.AutoMigrate {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := store.Migrate(mctx, pool); err != nil {
			return fmt.Errorf("rpm: migrate: %w", err)
		}
	}
	pg := store.NewPostgres(pool)
	pg.Logger = a.logger // listener failures and reconnects
	pg.ListenTimeout = time.Duration(a.StoreTimeout)
	a.source, a.writable = pg, pg
	return nil
}

func (a *App) redisKey() string {
	return fmt.Sprintf("redis|%t|%s", a.RedisCluster, strings.Join(a.Redis, ","))
}

func (a *App) provisionRedis(ctx context.Context) error {
	if len(a.Redis) == 0 {
		return nil
	}
	connect, err := redisConnector(a.Redis, a.RedisCluster)
	if err != nil {
		return fmt.Errorf("rpm: redis: %w", err)
	}
	conn, err := share(a, a.redisKey(), func() (*redisConn, func(), error) {
		c := connect()
		return &redisConn{client: c}, func() { _ = c.Close() }, nil
	})
	if err != nil {
		return fmt.Errorf("rpm: redis: %w", err)
	}
	if err := a.verifyRedis(ctx, conn); err != nil {
		return err
	}
	a.redis = conn.client
	return nil
}

// redisConn is a Redis client shared across reloads, with whether its
// server's version was found good (then reloads do not ask again).
type redisConn struct {
	client   redis.UniversalClient
	verified atomic.Bool
}

// redisConnector parses the redis addresses — redis:// URLs (whose query
// options, like pool_size, are honoured) or host:port — and returns a
// function that creates the client. Request-path calls carry their own
// deadline (redis_timeout), so context timeouts are enabled. Errors show
// addresses with their password redacted.
func redisConnector(addrs []string, cluster bool) (func() redis.UniversalClient, error) {
	if !cluster {
		if len(addrs) > 1 {
			return nil, fmt.Errorf("%d addresses given: several addresses need redis_cluster", len(addrs))
		}
		opts, err := parseRedisAddr(addrs[0])
		if err != nil {
			return nil, err
		}
		opts.ContextTimeoutEnabled = true
		return func() redis.UniversalClient { return redis.NewClient(opts) }, nil
	}
	copts := &redis.ClusterOptions{ContextTimeoutEnabled: true}
	for _, addr := range addrs {
		o, err := parseRedisAddr(addr)
		if err != nil {
			return nil, err
		}
		if o.DB != 0 {
			return nil, fmt.Errorf("%s: a Redis Cluster has no database %d", redactURL(addr), o.DB)
		}
		copts.Addrs = append(copts.Addrs, o.Addr)
		copts.Username, copts.Password, copts.TLSConfig = o.Username, o.Password, o.TLSConfig
	}
	return func() redis.UniversalClient { return redis.NewClusterClient(copts) }, nil
}

func parseRedisAddr(addr string) (*redis.Options, error) {
	if !strings.Contains(addr, "://") {
		return &redis.Options{Addr: addr}, nil
	}
	o, err := redis.ParseURL(addr)
	if err != nil {
		// A url.Error repeats the whole URL, password included: keep only
		// its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("parse %s: %w", redactURL(addr), err)
	}
	return o, nil
}

// redactURL hides the password of a URL, as pgx does for Postgres DSNs, so
// errors and logs can show the address. It does not need a parsable URL:
// everything between "://" and the last "@" is taken as user information,
// which at worst hides more than the password.
func redactURL(addr string) string {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return addr
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return addr
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return addr
	}
	return scheme + "://" + user + ":xxxxx@" + rest[at+1:]
}

func (a *App) provisionLimiter() {
	if a.redis == nil {
		lim, _ := share(a, "limiter|local", func() (limiter.Acquirer, func(), error) {
			l := limiter.NewDenyCache(limiter.NewLocal(time.Now), time.Now)
			return l, trackLimiter(l, nil), nil
		})
		a.limiter = lim
		return
	}
	var reserveTTL time.Duration // 0: reservations off
	if *a.Reservations {
		reserveTTL = time.Duration(*a.ReservationTTL)
	}
	key := fmt.Sprintf("limiter|%s|%s|%s|%s|%s", a.redisKey(), a.RedisKeyPrefix, time.Duration(a.RedisTimeout),
		time.Duration(a.ConcurrencyLease), reserveTTL)
	lim, _ := share(a, key, func() (redisLimiter, func(), error) {
		client := a.redis
		m := a.metrics // process-wide, the same for every configuration
		// Reservations live in the limiter, so they survive a reload as
		// the counters do.
		counting := limiter.NewRedis(client,
			limiter.WithOnCall(func(checks int) { m.checksPerCall.Observe(float64(checks)) }),
			limiter.WithLeases(leaseConfig(time.Duration(a.ConcurrencyLease))),
			limiter.WithReservations(reserveTTL))
		// The limiter outlives this configuration (see sharedLogger).
		guarded := limiter.NewGuarded(counting, time.Duration(a.RedisTimeout), sharedLogger("rpm.redis"),
			limiter.WithProbe(func(ctx context.Context) error { return client.Ping(ctx).Err() }),
			limiter.WithOnError(func(error) { m.redisErrors.Inc() }))
		deny := limiter.NewDenyCache(guarded, time.Now)
		untrack := trackLimiter(deny, counting)
		return redisLimiter{deny, guarded}, func() {
			_ = guarded.Close()
			// Sends the releases still queued and hands back the
			// reservations' unused units; leases still held expire within
			// the lease length.
			_ = counting.Close()
			untrack() // after Close: its hand-backs count
		}, nil
	})
	a.limiter, a.breaker = lim.limiter, lim.breaker
}

// redisLimiter is the Redis limiter shared across reloads: the deny cache
// over the circuit breaker over Redis, and the breaker itself, which the
// gateway owns as its view of Redis health.
type redisLimiter struct {
	limiter limiter.Acquirer
	breaker *limiter.Guarded
}

// leaseConfig renews leases every quarter of their length, at most every
// limiter.DefaultRenew, so that a renewal or two may fail before a lease
// of a live request lapses.
func leaseConfig(lease time.Duration) limiter.LeaseConfig {
	return limiter.LeaseConfig{Lease: lease, Renew: min(limiter.DefaultRenew, lease/4)}
}
