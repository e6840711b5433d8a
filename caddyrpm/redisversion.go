package caddyrpm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// minRedisMajor is the oldest Redis major version the plugin runs on: the
// read-only status script declares `#!lua flags=no-writes`, which Redis
// reads since 7.0 and older servers reject.
const minRedisMajor = 7

// redisCheckTimeout bounds the version check at provision time.
const redisCheckTimeout = 2 * time.Second

// verifyRedis refuses a Redis server older than minRedisMajor. A server
// that cannot be asked does not fail the start — requests then follow
// on_redis_error like any Redis outage — and is asked again at the next
// reload; one found good is not asked again.
func (a *App) verifyRedis(ctx context.Context, conn *redisConn) error {
	if conn.verified.Load() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	defer cancel()
	infos, err := redisInfos(cctx, conn.client)
	if err != nil {
		a.logger.Warn("redis did not answer at start: its version is checked at the next reload; "+
			"until it answers, requests follow on_redis_error",
			zap.String("on_redis_error", a.OnRedisError), zap.Error(err))
		return nil
	}
	for _, info := range infos {
		if err := checkRedisVersion(info); err != nil {
			return fmt.Errorf("rpm: redis: %w", err)
		}
	}
	conn.verified.Store(true)
	return nil
}

// redisInfos returns the INFO server reply of the server, or of every
// master of a cluster.
func redisInfos(ctx context.Context, client redis.UniversalClient) ([]string, error) {
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		info, err := client.Info(ctx, "server").Result()
		if err != nil {
			return nil, err
		}
		return []string{info}, nil
	}
	var mu sync.Mutex
	var infos []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		info, err := n.Info(ctx, "server").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		infos = append(infos, info)
		mu.Unlock()
		return nil
	})
	return infos, err
}

// checkRedisVersion reads redis_version from an INFO server reply and
// refuses versions before minRedisMajor.
func checkRedisVersion(info string) error {
	v, err := redisVersion(info)
	if err != nil {
		return err
	}
	majorText, _, _ := strings.Cut(v, ".")
	major, err := strconv.Atoi(majorText)
	if err != nil {
		return fmt.Errorf("unreadable redis_version %q", v)
	}
	if major < minRedisMajor {
		return fmt.Errorf("the server is Redis %s; caddy-rpm needs Redis %d.0 or newer "+
			"(its read-only status script uses `#!lua flags=no-writes`)", v, minRedisMajor)
	}
	return nil
}

// redisVersion returns the redis_version field of an INFO reply.
func redisVersion(info string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "redis_version:"); ok {
			return v, nil
		}
	}
	return "", errors.New("the INFO reply has no redis_version")
}
