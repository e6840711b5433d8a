package limiter

import (
	"slices"
	"strings"
)

// Counter layout in Redis
//
// The counters of many users share one hash, their bucket: in a single
// Redis all counters of a key prefix, <prefix>counts; in a Redis Cluster
// those of one hash slot, <prefix>counts{<tag>} with a tag of that slot
// (slotTag). Its fields are
//
//	w        the window number: floor(Redis server time in ms / 60000)
//	encoding a fixed text longer than Redis's hash-max-listpack-value
//	         (64 bytes by default), written with the bucket
//	<field>  per counter, its key from the hash tag on ("{u7}:user",
//	         "{u7}:group:2", ...): its admitted requests in window w
//
// Redis keeps a hash of up to hash-max-listpack-entries fields (512 by
// default) as a listpack, where finding a field scans the fields before
// it. A bucket of a few hundred users' counters is such a hash, and each
// check's HMGET and HSET then scanned it: the script took 7.2–9.0 µs per
// check in a bucket of 250 users, 2.3–2.4 µs in one that is a hashtable
// (BenchmarkRandomChecks). A value longer than hash-max-listpack-value
// makes Redis store the hash as a hashtable from its first write, at any
// size.
//
// So one script call of many checks reads all their counters with one
// HMGET and writes them with one HSET: the per-command cost of a script's
// redis.call, paid per user when each user had a hash of its own, was
// most of the Redis CPU of a check of a user not seen for a while.
//
// A bucket whose w is not the current window reads as 0 for every field.
// Its first write in a window unlinks it — so an earlier window's counts
// never carry over, and Redis frees a large bucket off its main thread —
// and writes w and the call's counters into a new one that expires at the
// end of the next window plus the slack: while traffic lasts, the unlink
// at the next window's first write comes first.
//
// A bucket's name is fixed, because Redis Cluster needs every key a script
// touches declared in KEYS, and the window is only known inside the script
// (it reads the Redis clock with TIME). A key without a hash tag is a hash
// of its own, with the field "".

// CounterPlace returns the Redis hash and field that hold the count of the
// counter named key (see the layout above); cluster tells whether the
// counters live in a Redis Cluster. The hash is in the Cluster slot of
// key. A field starts with "{", so it never is the window field "w".
func CounterPlace(key string, cluster bool) (hash, field string) {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key, ""
	}
	if n := strings.IndexByte(key[open+1:], '}'); n <= 0 {
		return key, ""
	}
	if cluster {
		return key[:open] + "counts{" + slotTag(clusterSlot(key)) + "}", key[open:]
	}
	return key[:open] + "counts", key[open:]
}

// IsCounterField reports whether field of a counter hash holds a count,
// not the hash's window or its encoding field.
func IsCounterField(field string) bool { return field != "w" && field != bucketEncodingField }

// The field a bucket is written with so that Redis keeps it as a
// hashtable, and its value (see the layout above). The value must not
// contain a quote: the scripts hold it as a Lua string.
const (
	bucketEncodingField = "encoding"
	bucketEncodingValue = "hashtable: this value is longer than hash-max-listpack-value, so field lookups do not scan"
)

// luaNewBucket is the start of the arguments of a bucket's first HSET:
// its encoding field and value, to be followed by 'w' and the counters.
const luaNewBucket = `'` + bucketEncodingField + `', '` + bucketEncodingValue + `'`

// counterLayout places the counters of one script call: each hash once in
// KEYS, each field once per hash. The script numbers the counters hash by
// hash, in the order of their fields, from 1.
type counterLayout struct {
	cluster bool       // the hashes are per Cluster slot (CounterPlace)
	hashes  []string   // the KEYS
	fields  [][]string // per hash
	first   []int      // per hash, the number of counters before it; set by appendArgs
}

// place is where a counter is in a layout: its hash and its field there.
type place struct{ hash, field int }

// add puts the counter named key in the layout, once however often it is
// added, and returns its place. A call carries at most maxBatch checks, so
// linear search beats a map.
func (l *counterLayout) add(key string) place {
	hash, field := CounterPlace(key, l.cluster)
	h := slices.Index(l.hashes, hash)
	if h < 0 {
		h = len(l.hashes)
		l.hashes = append(l.hashes, hash)
		l.fields = append(l.fields, nil)
	}
	f := slices.Index(l.fields[h], field)
	if f < 0 {
		f = len(l.fields[h])
		l.fields[h] = append(l.fields[h], field)
	}
	return place{h, f}
}

// appendArgs appends what the script reads the layout from. The hashes of
// a call mostly hold the same fields (users of one group, say), and every
// argument costs Redis more than most of the script's work on it, so each
// distinct list of fields goes once: the number of lists, then per list
// its length and its fields; then the hashes as runs of hashes with the
// same list, in KEYS order: the number of runs, then per run its length
// and the number of its list (from 1). Call it after the last add and
// before index.
func (l *counterLayout) appendArgs(args []any) []any {
	lists := make([]int, len(l.fields)) // per hash, the index of its list
	var distinct [][]string
	for h, fields := range l.fields {
		i := slices.IndexFunc(distinct, func(d []string) bool { return slices.Equal(d, fields) })
		if i < 0 {
			i = len(distinct)
			distinct = append(distinct, fields)
		}
		lists[h] = i
	}
	args = append(args, len(distinct))
	for _, fields := range distinct {
		args = append(args, len(fields))
		for _, f := range fields {
			args = append(args, f)
		}
	}
	type run struct{ hashes, list int }
	var runs []run
	l.first = make([]int, len(l.hashes))
	n := 0
	for h, fields := range l.fields {
		l.first[h] = n
		n += len(fields)
		if last := len(runs) - 1; last >= 0 && runs[last].list == lists[h] {
			runs[last].hashes++
		} else {
			runs = append(runs, run{1, lists[h]})
		}
	}
	args = append(args, len(runs))
	for _, r := range runs {
		args = append(args, r.hashes, r.list+1)
	}
	return args
}

// counters returns the number of distinct counters in the layout.
func (l *counterLayout) counters() int {
	n := 0
	for _, fields := range l.fields {
		n += len(fields)
	}
	return n
}

// index returns the script's 1-based number of the counter at p.
func (l *counterLayout) index(p place) int { return l.first[p.hash] + p.field + 1 }

// run reports whether places are consecutive counters of one hash, in
// their order, and returns the script's number of the first: then a check
// need not number its counters one by one.
func (l *counterLayout) run(places []place) (int, bool) {
	if len(places) == 0 {
		return 0, false
	}
	for i, p := range places {
		if p.hash != places[0].hash || p.field != places[0].field+i {
			return 0, false
		}
	}
	return l.index(places[0]), true
}

// Lua fragments the scripts that read and write counters share, in this
// order: luaClock, then with a set to the ARGV index of the layout
// (appendArgs) luaReadCounters, and after the checks luaWriteCounters. The
// writing scripts take the expiry slack in ms as ARGV[1].
//
// Turning a Lua number into a string (for a reply, or an argument of
// redis.call) goes through snprintf and costs more than most commands the
// scripts run, so they keep the strings they read (text, and TIME's for
// the clock in a reply: see redisClock), format each number they must at
// most once per call (the window only for a bucket's first write in it),
// and turn strings into numbers with x + 0 rather than tonumber(x), which
// parses twice.
const (
	// luaClock reads the Redis clock: t the TIME reply, ms, its window w
	// and ws, the window as a string once a write needs it; KEYS, ARGV,
	// redis.call (call) and unpack become locals, which Lua reads faster
	// than globals.
	luaClock = `
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local w = math.floor(ms / 60000)
local ws
local KEYS, ARGV, call, unpack = KEYS, ARGV, redis.call, unpack
`
	// luaReadCounters reads the layout (appendArgs) from ARGV[a] on and
	// leaves a at the first ARGV after it, nh the number of hashes, c that
	// of counters and many whether the call carries several checks; per
	// hash h: nf[h] its number of fields and fa[h] the ARGV index of the
	// first. It reads each hash with one HMGET into count and text (by
	// counter number; 0 unless the hash is of window w). stale[h] is nil
	// for a hash of window w, else its window (false: absent).
	luaReadCounters = `
-- Tables are sized up front, for a few checks when the call has several
-- (growing a table costs more than filling it: Lua rehashes it at 1, 2,
-- 4, ... elements), for one check's counters otherwise.
local many = #ARGV > 16
local count = many and {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {0, 0, 0, 0}
local text = many and {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {0, 0, 0, 0}
local dirty = many and {false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false} or {false, false, false, false}
local nf, fa, stale = {0, 0}, {0, 0}, {}
-- Small counts as strings, so that replying or writing them needs no
-- formatting.
local small = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8'}
local lists, nh, c = {0, 0}, 0, 0
local nl = ARGV[a] + 0
a = a + 1
for l = 1, nl do
  -- ARGV[a]: the list's length; its fields follow.
  lists[l] = a
  a = a + 1 + ARGV[a]
end
local runs = ARGV[a] + 0
a = a + 1
for r = 1, runs do
  local la = lists[ARGV[a + 1] + 0]
  local f = ARGV[la] + 0
  for i = 1, ARGV[a] + 0 do
    nh = nh + 1
    nf[nh], fa[nh] = f, la + 1
  end
  a = a + 2
end
for h = 1, nh do
  local f, b = nf[h], fa[h]
  local v = call('HMGET', KEYS[h], 'w', unpack(ARGV, b, b + f - 1))
  if v[1] and v[1] + 0 == w then
    for i = 1, f do
      local s = v[i + 1]
      if s then
        count[c + i], text[c + i] = s + 0, s
      else
        count[c + i], text[c + i] = 0, '0'
      end
    end
  else
    stale[h] = v[1]
    for i = 1, f do count[c + i], text[c + i] = 0, '0' end
  end
  c = c + f
end
`
)

// luaWriteCounters writes the counters marked dirty, one HSET per hash. A
// hash's first write of window w unlinks the hash of an earlier window,
// writes w with the counters and sets the expiry (see the layout above).
const luaWriteCounters = `
local expire
local set = many and {} or {0, 0, 0, 0}
c = 0
for h = 1, nh do
  local f, b, n = nf[h], fa[h] - 1, 0
  for i = 1, f do
    if dirty[c + i] then
      local x = count[c + i]
      set[n + 1], set[n + 2] = ARGV[b + i], small[x] or x
      n = n + 2
    end
  end
  if n > 0 then
    local old = stale[h]
    if old == nil then
      call('HSET', KEYS[h], unpack(set, 1, n))
    else
      if old then call('UNLINK', KEYS[h]) end
      ws = ws or tostring(w)
      call('HSET', KEYS[h], ` + luaNewBucket + `, 'w', ws, unpack(set, 1, n))
      expire = expire or tostring((w + 2) * 60000 + tonumber(ARGV[1]))
      call('PEXPIREAT', KEYS[h], expire)
    end
  end
  c = c + f
end
`
