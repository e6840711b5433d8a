package caddyrpm

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
)

func TestCheckRedisVersion(t *testing.T) {
	info := func(v string) string {
		return "# Server\r\nredis_version:" + v + "\r\nredis_git_sha1:00000000\r\n"
	}
	for _, v := range []string{"7.0.0", "7.0.15", "7.2.4", "8.0.1", "10.1"} {
		if err := checkRedisVersion(info(v)); err != nil {
			t.Errorf("version %s refused: %v", v, err)
		}
	}
	for _, v := range []string{"6.2.14", "5.0.7", "2.8"} {
		err := checkRedisVersion(info(v))
		if err == nil || !strings.Contains(err.Error(), "Redis "+v) || !strings.Contains(err.Error(), "7.0 or newer") {
			t.Errorf("version %s: error %v, want one naming it and the minimum", v, err)
		}
	}
	for _, bad := range []string{"# Server\r\nuptime:3\r\n", info("x.y")} {
		if err := checkRedisVersion(bad); err == nil {
			t.Errorf("no error for INFO %q", bad)
		}
	}
}

// TestVerifyRedisRealServer: the test Redis (7.x) passes, and a good
// answer is remembered so reloads do not ask again.
func TestVerifyRedisRealServer(t *testing.T) {
	c, _ := redistest.Shared(t)
	conn := &redisConn{client: c}
	core, logs := observer.New(zap.WarnLevel)
	a := &App{logger: zap.New(core)}
	if err := a.verifyRedis(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if !conn.verified.Load() {
		t.Fatal("a good version is not remembered")
	}
	// Unreachable: no error (fail-open semantics), not remembered.
	dead := &redisConn{client: redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})}
	defer dead.client.Close()
	if err := a.verifyRedis(context.Background(), dead); err != nil {
		t.Fatalf("unreachable redis failed the start: %v", err)
	}
	if dead.verified.Load() {
		t.Fatal("an unreachable server marked verified")
	}
	if logs.FilterMessageSnippet("redis did not answer at start").Len() != 1 {
		t.Fatalf("no warning about the unreachable redis: %v", logs.All())
	}
}
