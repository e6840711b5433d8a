package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Counter layout in Redis
//
// Each counter is a hash under its own key (see Keys):
//
//	w  the window number: floor(Redis server time in ms / 60000)
//	n  the number of admitted requests in window w
//
// The key names are fixed, because Redis Cluster needs every key a script
// touches declared in KEYS, and the window is only known inside the script
// (it reads the Redis clock with TIME). A hash whose w is not the current
// window reads as 0 and is overwritten on the next admitted request. Every
// write of a new window sets PEXPIREAT to the window end plus a slack, so
// idle counters expire on their own.

// checkScript checks and increments all counters of one request atomically.
//
// KEYS: the counter keys; ARGV: their limits, then the expiry slack in ms.
// Returns {denied, resetMs, count1, ..., countN}: denied is the 1-based
// index of the first full counter, 0 when admitted.
var checkScript = redis.NewScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = math.floor(ms / 60000)
local wend = (w + 1) * 60000
local n = #KEYS
local counts = {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'w', 'n')
  local c = 0
  if v[1] and tonumber(v[1]) == w then c = tonumber(v[2]) or 0 end
  counts[i] = c
end
for i = 1, n do
  if counts[i] >= tonumber(ARGV[i]) then
    return {i, wend - ms, unpack(counts)}
  end
end
local exp = wend + tonumber(ARGV[n + 1])
for i = 1, n do
  if counts[i] == 0 then
    redis.call('HSET', KEYS[i], 'w', string.format('%d', w), 'n', 1)
    redis.call('PEXPIREAT', KEYS[i], string.format('%d', exp))
  else
    redis.call('HINCRBY', KEYS[i], 'n', 1)
  end
  counts[i] = counts[i] + 1
end
return {0, wend - ms, unpack(counts)}
`)

// peekScript reads the current-window counts without writing.
//
// KEYS: the counter keys. Returns {resetMs, count1, ..., countN}.
var peekScript = redis.NewScript(`#!lua flags=no-writes
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = math.floor(ms / 60000)
local out = {(w + 1) * 60000 - ms}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'w', 'n')
  local c = 0
  if v[1] and tonumber(v[1]) == w then c = tonumber(v[2]) or 0 end
  out[i + 1] = c
end
return out
`)

// DefaultExpirySlack is how long a counter outlives the end of its window.
const DefaultExpirySlack = 5 * time.Second

// Redis is a Limiter whose counters live in Redis (single node or Cluster)
// and whose windows follow the Redis server clock. Each Check is one EVALSHA
// round trip; all keys of one call must share a hash slot (Keys does that).
//
// Errors wrap ErrUnavailable. Redis itself does not bound call time: give
// the client ContextTimeoutEnabled and wrap it in a Guarded limiter.
type Redis struct {
	client redis.UniversalClient
	slack  int64 // ms
}

// RedisOption configures a Redis limiter.
type RedisOption func(*Redis)

// WithExpirySlack sets how long counters outlive their window (default
// DefaultExpirySlack).
func WithExpirySlack(d time.Duration) RedisOption {
	return func(r *Redis) {
		if d >= 0 {
			r.slack = d.Milliseconds()
		}
	}
}

// NewRedis returns a Limiter backed by client.
func NewRedis(client redis.UniversalClient, opts ...RedisOption) *Redis {
	r := &Redis{client: client, slack: DefaultExpirySlack.Milliseconds()}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Load puts the scripts into the Redis script cache (on every master of a
// cluster), so the first Check needs no EVAL fallback. Optional.
func (r *Redis) Load(ctx context.Context) error {
	for _, s := range []*redis.Script{checkScript, peekScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return fmt.Errorf("%w: load script: %w", ErrUnavailable, err)
		}
	}
	return nil
}

// Check implements Limiter.
func (r *Redis) Check(ctx context.Context, counters []Counter) (Result, error) {
	if len(counters) == 0 {
		return Result{Allowed: true, Denied: -1}, nil
	}
	keys := make([]string, len(counters))
	args := make([]any, len(counters)+1)
	for i, c := range counters {
		keys[i] = c.Key
		args[i] = c.Limit
	}
	args[len(counters)] = r.slack
	vals, err := checkScript.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return Result{Denied: -1}, fmt.Errorf("%w: redis check: %w", ErrUnavailable, err)
	}
	if len(vals) != len(counters)+2 {
		return Result{Denied: -1}, fmt.Errorf("%w: redis check: %d values for %d counters", ErrUnavailable, len(vals), len(counters))
	}
	return Result{
		Allowed: vals[0] == 0,
		Denied:  int(vals[0]) - 1,
		ResetIn: time.Duration(vals[1]) * time.Millisecond,
		Counts:  vals[2:],
	}, nil
}

// Peek implements Limiter. With no keys it still reads the Redis clock, so
// it doubles as a health probe.
func (r *Redis) Peek(ctx context.Context, keys []string) ([]int64, time.Duration, error) {
	vals, err := peekScript.Run(ctx, r.client, keys).Int64Slice()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: redis peek: %w", ErrUnavailable, err)
	}
	if len(vals) != len(keys)+1 {
		return nil, 0, fmt.Errorf("%w: redis peek: %d values for %d keys", ErrUnavailable, len(vals), len(keys))
	}
	return vals[1:], time.Duration(vals[0]) * time.Millisecond, nil
}

// Count returns the current-window count of one counter (for tests and
// status pages).
func (r *Redis) Count(ctx context.Context, key string) (int64, error) {
	counts, _, err := r.Peek(ctx, []string{key})
	if err != nil {
		return 0, err
	}
	return counts[0], nil
}

// Forget implements Limiter; Redis keeps no local deny entries.
func (r *Redis) Forget(userID, groupID int64) {}
