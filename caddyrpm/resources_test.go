package caddyrpm

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/caddyrpm/caddy-rpm/limiter"
)

func TestRedisConnector(t *testing.T) {
	connect, err := redisConnector([]string{"redis://:pw@127.0.0.1:6390/3?pool_size=7"}, false)
	if err != nil {
		t.Fatal(err)
	}
	c := connect()
	defer c.Close()
	opts := c.(*redis.Client).Options()
	if opts.Addr != "127.0.0.1:6390" || opts.DB != 3 || opts.Password != "pw" || opts.PoolSize != 7 || !opts.ContextTimeoutEnabled {
		t.Fatalf("URL options not applied: addr %s db %d pool %d ctx %v", opts.Addr, opts.DB, opts.PoolSize, opts.ContextTimeoutEnabled)
	}

	// A Redis on the same host may be reached over its Unix socket.
	connect, err = redisConnector([]string{"unix:///run/redis/redis.sock?db=2"}, false)
	if err != nil {
		t.Fatal(err)
	}
	uc := connect()
	defer uc.Close()
	if opts := uc.(*redis.Client).Options(); opts.Network != "unix" || opts.Addr != "/run/redis/redis.sock" || opts.DB != 2 {
		t.Fatalf("unix URL options not applied: network %s addr %s db %d", opts.Network, opts.Addr, opts.DB)
	}

	connect, err = redisConnector([]string{"127.0.0.1:7001", "redis://127.0.0.1:7002"}, true)
	if err != nil {
		t.Fatal(err)
	}
	cc := connect()
	defer cc.Close()
	if got := cc.(*redis.ClusterClient).Options().Addrs; strings.Join(got, ",") != "127.0.0.1:7001,127.0.0.1:7002" {
		t.Fatalf("cluster addrs %v", got)
	}

	for _, bad := range []struct {
		addrs   []string
		cluster bool
		want    string
	}{
		{[]string{"127.0.0.1:1", "127.0.0.1:2"}, false, "need redis_cluster"},
		{[]string{"redis://127.0.0.1:7001/2"}, true, "no database 2"},
		{[]string{"redis://[bad"}, false, "parse"},
	} {
		if _, err := redisConnector(bad.addrs, bad.cluster); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("redisConnector(%v, %v) = %v, want error containing %q", bad.addrs, bad.cluster, err, bad.want)
		}
	}
}

func TestAppResolvesEnvPlaceholders(t *testing.T) {
	t.Setenv("RPM_TEST_DSN", "postgres://u@db/x")
	t.Setenv("RPM_TEST_REDIS", "redis://r:6379")
	t.Setenv("RPM_TEST_TOKEN", "tok")
	a := &App{Postgres: "{env.RPM_TEST_DSN}", Redis: []string{"{env.RPM_TEST_REDIS}"}, AdminAuthToken: "{env.RPM_TEST_TOKEN}"}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if a.Postgres != "postgres://u@db/x" || a.Redis[0] != "redis://r:6379" || a.AdminToken() != "tok" {
		t.Fatalf("placeholders not resolved: %q %q %q", a.Postgres, a.Redis, a.AdminToken())
	}
}

// TestRedisConfigErrorsRedactPassword: configuration errors about a Redis
// URL show it with the password replaced, whatever part of it is wrong.
func TestRedisConfigErrorsRedactPassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	for _, tc := range []struct {
		addrs   []string
		cluster bool
	}{
		{[]string{"redis://:" + secret + "@127.0.0.1:notaport/0"}, false},
		{[]string{"redis://user:" + secret + "@[::1/0"}, false},
		{[]string{"redis://:" + secret + "@127.0.0.1:6379/x"}, false},
		{[]string{"redis://:" + secret + "@127.0.0.1:6379/0?pool_size=many"}, false},
		{[]string{"redis://:" + secret + "@127.0.0.1:6379/0?unknown=1"}, false},
		{[]string{"redis://:" + secret + "@127.0.0.1:7001/2"}, true},
		{[]string{"redis://:" + secret + "@127.0.0.1:7001", "ftp://:" + secret + "@h"}, true},
	} {
		_, err := redisConnector(tc.addrs, tc.cluster)
		if err == nil {
			t.Errorf("%v: no error", tc.addrs)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:pw@h:1/0":          "redis://:xxxxx@h:1/0",
		"rediss://u:p@ss@h:1/0?x=1":  "rediss://u:xxxxx@h:1/0?x=1",
		"redis://u@h:1":              "redis://u@h:1",
		"redis://h:1/0":              "redis://h:1/0",
		"h:6379":                     "h:6379",
		"unix://:pw@/tmp/redis.sock": "unix://:xxxxx@/tmp/redis.sock",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReservationTTLDefault: reservations are on (250ms) unless
// reservation_ttl is set; 0 stays 0 (off); a negative one is refused.
func TestReservationTTLDefault(t *testing.T) {
	a := &App{KeysFile: "k.json"}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if a.ReservationTTL == nil || time.Duration(*a.ReservationTTL) != limiter.DefaultReservationTTL {
		t.Fatalf("default reservation_ttl %v", a.ReservationTTL)
	}
	off := caddy.Duration(0)
	a = &App{KeysFile: "k.json", ReservationTTL: &off}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if *a.ReservationTTL != 0 {
		t.Fatalf("reservation_ttl 0 became %v", time.Duration(*a.ReservationTTL))
	}
	neg := caddy.Duration(-time.Second)
	a = &App{KeysFile: "k.json", ReservationTTL: &neg}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "reservation_ttl") {
		t.Fatalf("negative reservation_ttl: %v", err)
	}
}

// TestReservationsDefault: reservations are on by default and off with
// "reservations": false or the older reservation_ttl 0, and the limiter
// then gets no TTL; on with a TTL of 0 is refused.
func TestReservationsDefault(t *testing.T) {
	yes, no := true, false
	zero := caddy.Duration(0)
	for _, tc := range []struct {
		name string
		app  App
		want bool
	}{
		{"default", App{}, true},
		{"off", App{Reservations: &no}, false},
		{"on", App{Reservations: &yes}, true},
		{"ttl 0", App{ReservationTTL: &zero}, false},
	} {
		a := tc.app
		a.KeysFile = "k.json"
		if err := a.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if a.Reservations == nil || *a.Reservations != tc.want {
			t.Errorf("%s: reservations %v, want %t", tc.name, a.Reservations, tc.want)
		}
	}
	a := &App{KeysFile: "k.json", Reservations: &yes, ReservationTTL: &zero}
	if err := a.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err == nil || !strings.Contains(err.Error(), "reservations on") {
		t.Fatalf("reservations on with reservation_ttl 0: %v", err)
	}
}
