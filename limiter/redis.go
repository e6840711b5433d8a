package limiter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkScript checks and increments the counters of one or more checks
// (requests), one after the other, each atomically. Identical checks (same
// counters, same slot sets, same limits) come as one group of k: the first
// of them that fit are admitted and the rest refused, exactly as k checks
// in a row would be, at the cost of one. A check may also take concurrency
// slots (see slots_redis.go): each check of a group brings its own lease
// member, and each admitted one is added to every set of the group. A
// group whose first check was admitted may also take up to want spare
// places (places.go): members named after that check's member with "/1",
// "/2", ..., as many as every set's room after the group divided by
// reserveShare allows.
//
// KEYS: the counter hashes of the call (layout.go), then per group its
// slot set keys. ARGV[1]: the expiry slack in ms; ARGV[2]: the lease
// length in ms; ARGV[3]: reserveShare; then the counter layout
// (counterLayout.appendArgs); then per group its size k, the number of its
// slot sets s, its number of counters m and the number of its first
// counter in the layout when they are consecutive (counterLayout.run),
// then their m limits — or, if they are not, 0 and per counter its number
// and its limit; then, if s > 0, the s set limits, want and the k members,
// in the order of the group. A group of one check without slot sets whose
// counters follow the previous group's (the first group's: start at 1) is
// only -m and the m limits, the form of most groups of a call of distinct
// users: every argument costs Redis more than most of the script's work
// on it. Returns one string of space-separated integers (one bulk
// reply is cheaper to build and to parse than an array): the Redis clock
// as TIME gave it, seconds and microseconds (redisClock), then per
// group "admitted denied count1 ... countm", where admitted is how many of
// the k were admitted, denied the 1-based index of the first counter the
// others found full (0 if none), and the counts those before the group; a
// group with slot sets goes on with "deniedSlot held1 ... helds spares":
// the 1-based index of the first set the others found full when no counter
// was (0 if none), the sizes of the sets before the group, and the spare
// places taken.
//
// A call of distinct checks, the most common under load, goes to
// distinctScript instead (distinct.go), which answers alike.
//
// Each counter bucket is read with one HMGET and written with at most one
// HSET per call, however many checks and counters of the call share it;
// each slot set is pruned and counted at most once per call. A set that
// gets members is given two lease lengths to live whenever less than one
// is left — so it outlives every deadline in it, and PEXPIRE runs about
// once per lease length and set rather than once per call.
var checkScript = redis.NewScript(luaClock + `
local lease = tonumber(ARGV[2])
local share = tonumber(ARGV[3])
local a = 4
` + luaReadCounters + `
local min, max = math.min, math.max
local card, extended = {}, {}
-- Reused by every group: a call may carry 64.
local idx, before, limits, held, cap = {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {}, {}
local out, o = many and {t[1], t[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {t[1], t[2]}, 2
local k, nargv, nextc = nh, #ARGV, 1
while a <= nargv do
  local size, s, m, first = ARGV[a] + 0, 0, 0, nextc
  if size < 0 then
    -- Short form: one check without slot sets whose -size counters
    -- follow the previous group's.
    size, m, a = 1, -size, a + 1
  else
    s, m, first = ARGV[a + 1] + 0, ARGV[a + 2] + 0, ARGV[a + 3] + 0
    a = a + 4
  end
  -- The counters are first, first + 1, ..., and only their limits
  -- follow; or (first = 0) per counter its number and limit.
  local admitted, base = size, first > 0 and first - 1
  for i = 1, m do
    local j = base and base + i
    if not j then j, a = ARGV[a] + 0, a + 1 end
    local c, limit = count[j], ARGV[a] + 0
    idx[i], before[i], limits[i] = j, c, limit
    if limit - c < admitted then admitted = limit - c end
    a = a + 1
  end
  if admitted < 0 then admitted = 0 end
  local denied = 0
  if admitted < size then
    for i = 1, m do
      if before[i] + admitted >= limits[i] then denied = i break end
    end
  end
  local deniedSlot, spares = 0, 0
  if s > 0 then
    local room = admitted
    for i = 1, s do
      local key = KEYS[k + i]
      local n = card[key]
      if n == nil then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', ms)
        n = redis.call('ZCARD', key)
        card[key] = n
      end
      held[i], cap[i] = n, tonumber(ARGV[a + i - 1])
      room = min(room, max(0, cap[i] - n))
    end
    if room < admitted then
      -- A set is full before any counter: it refuses the rest.
      denied = 0
      for i = 1, s do
        if held[i] + room >= cap[i] then deniedSlot = i break end
      end
      admitted = room
    end
    a = a + s
    if admitted > 0 then
      -- Spares: never more than a set's room after the group / share.
      spares = tonumber(ARGV[a])
      for i = 1, s do
        spares = min(spares, math.floor((cap[i] - held[i] - admitted) / share))
      end
      local deadline = ms + lease
      local add = {}
      for j = 1, admitted do
        add[2 * j - 1], add[2 * j] = deadline, ARGV[a + j]
      end
      for j = 1, spares do
        add[2 * (admitted + j) - 1], add[2 * (admitted + j)] = deadline, ARGV[a + 1] .. '/' .. j
      end
      for i = 1, s do
        local key = KEYS[k + i]
        redis.call('ZADD', key, unpack(add))
        card[key] = held[i] + admitted + spares
        if not extended[key] then
          if redis.call('PTTL', key) < lease then redis.call('PEXPIRE', key, 2 * lease) end
          extended[key] = true
        end
      end
    end
    a = a + 1 + size
  end
  if m > 0 then nextc = idx[m] + 1 end
  out[o + 1], out[o + 2] = small[admitted] or admitted, small[denied] or denied
  o = o + 2
  for i = 1, m do out[o + i] = text[idx[i]] or before[i] end
  o = o + m
  if admitted > 0 then
    for i = 1, m do
      count[idx[i]] = before[i] + admitted
      text[idx[i]] = nil
      dirty[idx[i]] = true
    end
  end
  if s > 0 then
    out[o + 1] = deniedSlot
    for i = 1, s do out[o + 1 + i] = held[i] end
    out[o + s + 2] = spares
    o = o + s + 2
  end
  k = k + s
end
` + luaWriteCounters + `
return table.concat(out, ' ', 1, o)
`)

// peekScript reads the current-window counts without writing.
//
// KEYS: the counter hashes; ARGV: the counter layout (layout.go). Returns
// {resetMs, count1, ..., countN} in the layout's numbering.
var peekScript = redis.NewScript("#!lua flags=no-writes" + luaClock + `
local a = 1
` + luaReadCounters + `
local out = {(w + 1) * 60000 - ms}
for i = 1, c do out[i + 1] = count[i] end
return out
`)

// DefaultExpirySlack is how long a counter outlives the end of its window.
const DefaultExpirySlack = 5 * time.Second

// Redis is a Limiter whose counters live in Redis (single node or Cluster)
// and whose windows follow the Redis server clock. Each Check waits for one
// round trip, which concurrent checks of the same server (of the same
// master on a Cluster, route.go) may share, unless a reservation admits it
// locally (WithReservations, reserve.go); all keys of one Check must share
// a hash slot (Keys does that).
//
// Errors wrap ErrUnavailable. Redis itself does not bound call time: give
// the client ContextTimeoutEnabled and wrap it in a Guarded limiter.
//
// Concurrency slots (CheckAcquire) are leases that two goroutines, started
// by the first acquisition, renew and release (lease.go); Close ends them.
type Redis struct {
	client  redis.UniversalClient
	cluster bool           // client is a Cluster client
	slack   int64          // ms
	batcher *batcher       // of a single Redis
	routes  *clusterRoutes // of a Cluster's masters (route.go)
	onCall  func(checks int)
	leases  *leaseKeeper  // concurrency slots (slots_redis.go)
	reserve *reservations // nil: reservations off (reserve.go)
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

// WithOnCall sets a function called after each check script call with the
// number of checks it carried (for metrics).
func WithOnCall(f func(checks int)) RedisOption {
	return func(r *Redis) { r.onCall = f }
}

// NewRedis returns a Limiter backed by client.
func NewRedis(client redis.UniversalClient, opts ...RedisOption) *Redis {
	r := &Redis{client: client, slack: DefaultExpirySlack.Milliseconds(), leases: newLeaseKeeper(client)}
	newBatcher := func() *batcher { return &batcher{run: r.run} }
	if cc, ok := client.(*redis.ClusterClient); ok {
		r.cluster = true
		r.routes = newClusterRoutes(cc, newBatcher)
	} else {
		r.batcher = newBatcher()
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Load puts the scripts into the Redis script cache (on every master of a
// cluster), so the first Check needs no EVAL fallback. Optional.
func (r *Redis) Load(ctx context.Context) error {
	for _, s := range []*redis.Script{checkScript, distinctScript, peekScript, reserveScript, handBackScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return unavailable("load script", err)
		}
	}
	return nil
}

// Check implements Limiter. Concurrent checks of one slot may share a
// script call (see batch.go); each still waits for exactly one round trip.
func (r *Redis) Check(ctx context.Context, counters []Counter) (Result, error) {
	return r.checkBy(ctx, time.Now(), time.Time{}, counters)
}

// checkBy is Check at now ending by deadline (zero: none) without a
// context timer per check; Guarded uses it for its timeout.
func (r *Redis) checkBy(ctx context.Context, now, deadline time.Time, counters []Counter) (Result, error) {
	if len(counters) == 0 {
		return Result{Allowed: true, Denied: -1}, nil
	}
	if r.reserve != nil {
		return r.reserve.check(ctx, now, deadline, counters)
	}
	return r.batcherFor(ctx, deadline, counters[0].Key).check(ctx, deadline, counters)
}

// batcherFor returns the batcher of the server holding key: the only one,
// or the Cluster master serving key's slot (found by deadline).
func (r *Redis) batcherFor(ctx context.Context, deadline time.Time, key string) *batcher {
	if r.routes == nil {
		return r.batcher
	}
	return r.routes.master(ctx, deadline, key).b
}

// server implements partitioner: on a Cluster, the master serving key's
// slot and a probe of it; a single Redis is one server, the whole backend.
func (r *Redis) server(ctx context.Context, deadline time.Time, key string) (string, func(context.Context) error) {
	if r.routes == nil {
		return "", nil
	}
	n := r.routes.master(ctx, deadline, key)
	return n.addr, n.probe
}

// scriptCall is one script call: the checks of one slot.
type scriptCall struct {
	checks []*pendingCheck
	groups [][]*pendingCheck // checks, identical ones together
	script *redis.Script
	keys   []string
	args   []any
}

// run sends checks — of a single Redis, or of one Cluster master's slots —
// and stores each one's outcome. The checks of a slot share a script call;
// on a Cluster the calls of several slots go out in one pipeline, one
// round trip to the master.
func (r *Redis) run(ctx context.Context, checks []*pendingCheck) {
	parts := [][]*pendingCheck{checks}
	if r.cluster {
		parts = slotChecks(checks)
	}
	if len(parts) == 1 { // a single Redis, or checks of one slot
		c := r.scriptCall(parts[0])
		reply, err := c.script.Run(ctx, r.client, c.keys, c.args...).Text()
		r.finish(c, reply, err)
		return
	}
	calls := make([]*scriptCall, len(parts))
	for i, part := range parts {
		calls[i] = r.scriptCall(part)
	}
	r.pipeline(ctx, calls)
}

// pipeline sends calls in one pipeline of EVALSHAs, and those that find
// their script missing (a node restarted, failed over or flushed) once more
// as EVALs, as go-redis's Script.Run does for a single call.
func (r *Redis) pipeline(ctx context.Context, calls []*scriptCall) {
	cmds := make([]*redis.Cmd, len(calls))
	for _, eval := range []bool{false, true} {
		pipe := r.client.Pipeline()
		for i, c := range calls {
			if eval {
				cmds[i] = c.script.Eval(ctx, pipe, c.keys, c.args...)
			} else {
				cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
			}
		}
		_, _ = pipe.Exec(ctx) // each command holds its own error
		missing := calls[:0]
		for i, c := range calls {
			reply, err := cmds[i].Text()
			if !eval && isNoScript(err) {
				missing = append(missing, c)
				continue
			}
			r.finish(c, reply, err)
		}
		if calls = missing; len(calls) == 0 {
			return
		}
	}
}

func isNoScript(err error) bool {
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}

// scriptCall builds the script call of checks, which share a slot.
func (r *Redis) scriptCall(checks []*pendingCheck) *scriptCall {
	c := &scriptCall{checks: checks, groups: groupChecks(checks), script: distinctScript}
	layout, places := placeCounters(c.groups, r.cluster)
	c.keys = layout.hashes
	var distinct bool
	c.args, distinct = distinctArgs(r.slack, &layout, c.groups, places)
	if !distinct {
		c.script = checkScript
		c.keys, c.args = r.checkArgs(&layout, c.groups, places)
	}
	return c
}

// finish stores the outcome of call c, given its reply or error, in each of
// its checks.
func (r *Redis) finish(c *scriptCall, reply string, err error) {
	if r.onCall != nil {
		r.onCall(len(c.checks))
	}
	nvals := 2
	for _, g := range c.groups {
		nvals += 2 + len(g[0].counters)
		if s := len(g[0].slots); s > 0 {
			nvals += 2 + s
		}
	}
	var vals []int64
	if err == nil {
		vals, err = parseInts(reply, nvals)
	}
	if err != nil {
		for _, p := range c.checks {
			p.fail(err)
		}
		return
	}
	_, resetIn := redisClock(vals[0], vals[1])
	vals = vals[2:]
	for _, g := range c.groups {
		m := len(g[0].counters)
		admitted, denied, before := int(vals[0]), int(vals[1]), vals[2:2+m]
		// The checks of a group, in order: the first admitted ones see
		// their own increment, the refused ones the group's last count.
		counts := make([]int64, len(g)*m)
		for j, p := range g {
			res := Result{Allowed: j < admitted, Denied: -1, ResetIn: resetIn, Counts: counts[j*m : (j+1)*m : (j+1)*m]}
			add := int64(min(j+1, admitted))
			if !res.Allowed {
				res.Denied = denied - 1
			}
			for i := range m {
				res.Counts[i] = before[i] + add
			}
			p.res, p.deniedSlot = res, -1
		}
		vals = vals[2+m:]
		if s := len(g[0].slots); s > 0 {
			vals = slotOutcome(g, admitted, vals, s)
		}
	}
}

// placeCounters puts the counters of groups (each group's first check's)
// into a layout, in order, and returns it with their places.
func placeCounters(groups [][]*pendingCheck, cluster bool) (counterLayout, []place) {
	layout := counterLayout{cluster: cluster}
	places := make([]place, 0, 2*len(groups))
	for _, g := range groups {
		for _, c := range g[0].counters {
			places = append(places, layout.add(c.Key))
		}
	}
	return layout, places
}

// checkArgs returns checkScript's keys and arguments for groups, whose
// counters are in layout at places.
func (r *Redis) checkArgs(layout *counterLayout, groups [][]*pendingCheck, places []place) ([]string, []any) {
	nslots, nchecks := 0, 0
	for _, g := range groups {
		nslots += len(g[0].slots)
		nchecks += len(g)
	}
	keys := append(make([]string, 0, len(layout.hashes)+nslots), layout.hashes...)
	args := make([]any, 0, 4+2*len(layout.hashes)+3*len(places)+3*len(groups)+nslots+nchecks)
	args = append(args, r.slack, r.leases.cfg.Lease.Milliseconds(), reserveShare)
	args = layout.appendArgs(args)
	args, keys = appendGroups(args, keys, layout, groups, places)
	return keys, args
}

// appendGroups appends what checkScript reads per group (see there) to
// args, and the groups' slot set keys to keys; places are the groups'
// counters in the layout, in order.
func appendGroups(args []any, keys []string, layout *counterLayout, groups [][]*pendingCheck, places []place) ([]any, []string) {
	next, following := 0, 1 // following: the number of the counter after the previous group's
	for _, g := range groups {
		p := g[0]
		at := places[next : next+len(p.counters)]
		next += len(p.counters)
		first, ok := layout.run(at)
		switch {
		case ok && len(g) == 1 && len(p.slots) == 0 && first == following:
			args = append(args, -len(at))
		case ok:
			args = append(args, len(g), len(p.slots), len(p.counters), first)
		default:
			args = append(args, len(g), len(p.slots), len(p.counters), 0)
		}
		if len(at) > 0 {
			following = layout.index(at[len(at)-1]) + 1
		}
		for i, c := range p.counters {
			if !ok {
				args = append(args, layout.index(at[i]))
			}
			args = append(args, c.Limit)
		}
		if len(p.slots) > 0 {
			for _, sl := range p.slots {
				keys = append(keys, sl.Key)
				args = append(args, sl.Limit)
			}
			// The spares are the first check's: it is admitted if any
			// is, and its caller gives back what it asked for if its
			// answer is lost.
			args = append(args, p.spareWant)
			for _, q := range g {
				args = append(args, q.member)
			}
		}
	}
	return args, keys
}

// groupChecks puts identical checks (the same counters and slot sets with
// the same limits) together, keeping the order within each group. Any
// order of the checks of one call is an order they could have arrived in.
func groupChecks(checks []*pendingCheck) [][]*pendingCheck {
	if len(checks) == 1 { // the common case at low load
		return [][]*pendingCheck{checks}
	}
	groups := make([][]*pendingCheck, 0, 1)
next:
	for _, p := range checks {
		for i, g := range groups {
			if sameCounters(g[0].counters, p.counters) && sameSlots(g[0].slots, p.slots) {
				groups[i] = append(g, p)
				continue next
			}
		}
		groups = append(groups, []*pendingCheck{p})
	}
	return groups
}

func sameCounters(a, b []Counter) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Limit != b[i].Limit {
			return false
		}
	}
	return true
}

// parseInts parses want space-separated integers.
func parseInts(s string, want int) ([]int64, error) {
	vals := make([]int64, 0, want)
	for field := range strings.FieldsSeq(s) {
		v, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("check reply %q: %w", s, err)
		}
		vals = append(vals, v)
	}
	if len(vals) != want {
		return nil, fmt.Errorf("check reply has %d values, want %d", len(vals), want)
	}
	return vals, nil
}

// redisClock returns the window and the time left in it at the Redis
// clock reading sec, usec (TIME's reply, which the scripts pass on rather
// than format numbers of their own).
func redisClock(sec, usec int64) (window int64, resetIn time.Duration) {
	ms := sec*1000 + usec/1000
	window = ms / Window.Milliseconds()
	return window, time.Duration(Window.Milliseconds()-ms%Window.Milliseconds()) * time.Millisecond
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// Peek implements Limiter. With no keys it still reads the Redis clock, so
// it doubles as a health probe.
func (r *Redis) Peek(ctx context.Context, keys []string) ([]int64, time.Duration, error) {
	layout := counterLayout{cluster: r.cluster}
	places := make([]place, len(keys))
	for i, k := range keys {
		places[i] = layout.add(k)
	}
	args := layout.appendArgs(make([]any, 0, 1+2*len(keys)))
	vals, err := peekScript.Run(ctx, r.client, layout.hashes, args...).Int64Slice()
	if err != nil {
		return nil, 0, unavailable("redis peek", err)
	}
	if want := 1 + layout.counters(); len(vals) != want {
		return nil, 0, fmt.Errorf("%w: redis peek: %d values, want %d", ErrUnavailable, len(vals), want)
	}
	counts := make([]int64, len(keys))
	for i, p := range places {
		counts[i] = vals[layout.index(p)]
	}
	return counts, time.Duration(vals[0]) * time.Millisecond, nil
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

// Forget implements Limiter. Redis keeps no local deny entries; with
// reservations on it drops those of the user or group (both 0: all) and
// hands their unused units back, so a changed limit is checked in Redis
// on the next request.
func (r *Redis) Forget(userID, groupID int64) {
	if r.reserve != nil {
		r.reserve.forget(userID, groupID)
	}
}
