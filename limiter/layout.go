package limiter

import (
	"slices"
	"strconv"
	"strings"
)

// Counter layout in Redis
//
// All counters of one user live in one hash: the counter key up to and
// including its hash tag, e.g. <prefix>{u7} (see Keys). Its fields are
//
//	w        the window number: floor(Redis server time in ms / 60000)
//	n        how many counter fields the hash holds
//	<field>  per counter, the rest of its key (":user", ":group:2", ...):
//	         the number of its admitted requests in window w
//
// So a check reads all its counters with one HMGET and writes them with one
// HSET, whatever their number: that per-counter work was most of the Redis
// CPU of a check of a user not seen for a while.
//
// A hash whose w is not the current window reads as 0 for every field. Its
// first write in a window writes w and every field of the call; if n says
// the hash holds counters the call does not name, it is deleted first, so
// that none of them carries an older window's count into the new one.
//
// A hash outlives its window. Windows go in blocks of counterBlock; a
// hash's first write in a block (its creation, or a first write of a
// window whose block is not that of the hash's w) sets its expiry to the
// end of the first window two blocks on, plus the slack; if the hash's w
// is of a block whose number is a multiple of counterBlock, it also checks
// n against HLEN, for counters added by an older version that kept no n (a
// call of its own, so not at every block).
// Any write within a block finds the expiry past the window's end: the
// block's first write set it at least to the block's end. So a user active
// every few minutes keeps one hash, its expiry set once per block, instead
// of one created, given an expiry and expired per window — what a user's
// first check of a window cost most of all; an idle user's hash goes 5 to
// 8 windows after its last write. Keeping the expiry in the hash would
// cost every check a field more to read.
//
// The hash names are fixed, because Redis Cluster needs every key a script
// touches declared in KEYS, and the window is only known inside the script
// (it reads the Redis clock with TIME). A key without a hash tag is a hash
// of its own, with the field "".

// counterBlock is how many windows a counter hash's expiry covers at least
// (see the layout above).
const counterBlock = 4

var counterBlockText = strconv.Itoa(counterBlock)

// SplitCounterKey returns the Redis hash and field that hold the count of
// the counter named key: the hash is key up to and including its hash tag
// (the first "{...}" with something inside, as Redis Cluster reads it) and
// the field the rest; without a hash tag, key itself and "". The hash is
// in the Cluster slot of key. The rest of a key of Keys starts with ":",
// so it never is the window field "w".
func SplitCounterKey(key string) (hash, field string) {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key, ""
	}
	n := strings.IndexByte(key[open+1:], '}')
	if n <= 0 {
		return key, ""
	}
	end := open + n + 2
	return key[:end], key[end:]
}

// IsCounterField reports whether field of a counter hash holds a count,
// not the hash's window or number of counters.
func IsCounterField(field string) bool { return field != "w" && field != "n" }

// counterLayout places the counters of one script call: each hash once in
// KEYS, each field once per hash. The script numbers the counters hash by
// hash, in the order of their fields, from 1.
type counterLayout struct {
	hashes []string   // the KEYS
	fields [][]string // per hash
	first  []int      // per hash, the number of counters before it; set by appendArgs
}

// place is where a counter is in a layout: its hash and its field there.
type place struct{ hash, field int }

// add puts the counter named key in the layout, once however often it is
// added, and returns its place. A call carries at most maxBatch checks, so
// linear search beats a map.
func (l *counterLayout) add(key string) place {
	hash, field := SplitCounterKey(key)
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

// wholeHash reports whether places are all the fields of one hash, in
// their order, and returns that hash's 1-based number: then a check need
// not number its counters one by one.
func (l *counterLayout) wholeHash(places []place) (int, bool) {
	if len(places) == 0 || len(places) != len(l.fields[places[0].hash]) {
		return 0, false
	}
	for i, p := range places {
		if p.hash != places[0].hash || p.field != i {
			return 0, false
		}
	}
	return places[0].hash + 1, true
}

// Lua fragments the scripts that read and write counters share, in this
// order: luaClock, then with a set to the ARGV index of the layout
// (appendArgs) luaReadCounters, and after the checks luaWriteCounters. The
// writing scripts take the expiry slack in ms as ARGV[1].
//
// Turning a Lua number into a string (for a reply, or an argument of
// redis.call) goes through snprintf and costs more than most commands the
// scripts run, so they keep the strings they read (text, ws), format each
// number they must at most once per call, and turn strings into numbers
// with x + 0 rather than tonumber(x), which parses twice.
const (
	// luaClock reads the Redis clock: ms, its window w (ws as a string)
	// and the window end; KEYS, ARGV, redis.call (call) and unpack become
	// locals, which Lua reads faster than globals.
	luaClock = `
local t = redis.call('TIME')
local ms = t[1] * 1000 + math.floor(t[2] / 1000)
local w = math.floor(ms / 60000)
local ws = tostring(w)
local wend = (w + 1) * 60000
local KEYS, ARGV, call, unpack = KEYS, ARGV, redis.call, unpack
`
	// luaReadCounters reads the layout (appendArgs) from ARGV[a] on and
	// leaves a at the first ARGV after it, nh the number of hashes, c that
	// of counters and many whether the call has more than one key; per
	// hash h: nf[h] its number of fields, fa[h] the
	// ARGV index of the first, cb[h] the number of counters before it. It
	// reads each hash with one HMGET into count and text (by counter
	// number; 0 unless the hash is of window w). reply keeps, per hash
	// that is not of window w or lacks a field of the call, its reply: v[1]
	// its window (false: absent), v[2] its number of counters, v[2 + i] its
	// i-th field.
	luaReadCounters = `
-- A call of several hashes gets its tables sized for a few checks at
-- once (growing a table costs more than filling it); a call of one would
-- only pay for the room.
local many = #KEYS > 1
local count = many and {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {}
local text = many and {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {}
local dirty = many and {false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false} or {}
local reply = many and {false, false, false, false, false, false, false, false} or {}
local nf = many and {0, 0, 0, 0, 0, 0, 0, 0} or {}
local fa = many and {0, 0, 0, 0, 0, 0, 0, 0} or {}
local cb = many and {0, 0, 0, 0, 0, 0, 0, 0} or {}
-- Small counts as strings, so that replying or writing them needs no
-- formatting.
local small = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8'}
local lists, nh, c = {}, 0, 0
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
  local v = call('HMGET', KEYS[h], 'w', 'n', unpack(ARGV, b, b + f - 1))
  cb[h] = c
  if v[1] == ws then
    for i = 1, f do
      local s = v[i + 2]
      if s then
        count[c + i], text[c + i] = s + 0, s
      else
        count[c + i], text[c + i] = 0, '0'
        reply[h] = v
      end
    end
  else
    reply[h] = v
    for i = 1, f do count[c + i], text[c + i] = 0, '0' end
  end
  c = c + f
end
`
)

// luaWriteCounters writes the counters marked dirty, one HSET per hash. A
// hash's first write of window w writes w and every field of the call, n
// if it changes, and the expiry if it is due (see the layout above).
var luaWriteCounters = `
local wb = (w - w % ` + counterBlockText + `) / ` + counterBlockText + `
local expire
local set = {}
c = 0
for h = 1, nh do
  local f, b, n, v = nf[h], fa[h] - 1, 0, reply[h]
  local first = false
  if v and v[1] ~= ws then
    for i = 1, f do
      if dirty[c + i] then first = true break end
    end
  end
  if first then
    -- The hash's first write of window w: w and every counter of the
    -- call, the others deleted if n (or HLEN) says there are any.
    local have = 0
    for i = 1, f do
      local x = count[c + i]
      set[n + 1], set[n + 2] = ARGV[b + i], small[x] or x
      n = n + 2
      if v[i + 2] then have = have + 1 end
    end
    local old, fs = v[1], small[f] or tostring(f)
    local ow = old and old + 0
    local ob = ow and (ow - ow % ` + counterBlockText + `) / ` + counterBlockText + `
    local due = ob ~= wb
    -- HLEN catches a counter that n missed (added by an instance of a
    -- version that kept no n).
    if old and (v[2] ~= (small[have] or tostring(have)) or due and ob % ` + counterBlockText + ` == 0 and call('HLEN', KEYS[h]) ~= have + 2) then
      call('DEL', KEYS[h])
      old, due = false, true
    end
    if not old or fs ~= v[2] then
      set[n + 1], set[n + 2] = 'n', fs
      n = n + 2
    end
    call('HSET', KEYS[h], 'w', ws, unpack(set, 1, n))
    if due then
      expire = expire or tostring((` + counterBlockText + ` * (wb + 2) + 1) * 60000 + tonumber(ARGV[1]))
      call('PEXPIREAT', KEYS[h], expire)
    end
  else
    -- A later write of window w: the dirty counters, and n grown by
    -- those new to the hash.
    local added = 0
    for i = 1, f do
      if dirty[c + i] then
        local x = count[c + i]
        set[n + 1], set[n + 2] = ARGV[b + i], small[x] or x
        n = n + 2
        if v and not v[i + 2] then added = added + 1 end
      end
    end
    if added > 0 and v[2] then
      set[n + 1], set[n + 2] = 'n', v[2] + added
      n = n + 2
    end
    if n > 0 then call('HSET', KEYS[h], unpack(set, 1, n)) end
  end
  c = c + f
end
`
