package limiter

import (
	"slices"

	"github.com/redis/go-redis/v9"
)

// The call of distinct checks
//
// Under load most script calls carry checks of different users: each
// check alone in its group, without slot sets, no counter shared with
// another check, all in one counter bucket (a single Redis has one per key
// prefix; a Cluster call is of one slot, whose bucket it is). checkScript
// handles them as one case of its general layout, and its generality —
// reading the layout, numbering the counters, tables per counter — costs
// Redis more than the counters' own work. distinctScript is checkScript
// for that case alone, with the same reply, so that the most common call
// under load is also the cheapest (see TestDistinctScriptMatchesCheckScript
// and the instruction counts in the README).
//
// KEYS[1]: the bucket. ARGV[1]: the expiry slack in ms; ARGV[2]: the
// number n of counters; then their n fields, in the order of the checks;
// then the checks' limits in runs: a run of checks with the same limits is
// their number c, the number m of counters of each and the m limits. Most
// checks of a call have the limits of the check before (a group's default,
// a tier), and every argument costs Redis as much as a counter's commands
// (parsed, then copied into ARGV). Returns what checkScript returns for
// the same checks.
var distinctScript = redis.NewScript(luaClock + `
local n = ARGV[2] + 0
local v = call('HMGET', KEYS[1], 'w', unpack(ARGV, 3, 2 + n))
local old = v[1]
local fresh = old and old + 0 == w
-- Most counts and counter numbers are a digit or two. Converting a string
-- to a number (strtod) and back (snprintf) costs more than a check's
-- commands, so in a call of more than two counters (where building them
-- pays) a small value goes through these tables instead: num[s] is the
-- number of the string s, small[x] the string of the number x and succ[s]
-- the string of s + 1. The tables and the output are sized up front:
-- growing a table costs more than filling it (Lua rehashes it at 1, 2, 4,
-- ... elements).
local small = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8'}
local out, set, num, succ
if n > 2 then
  out = {t[1], t[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  set = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
  num = {['1'] = 1, ['2'] = 2, ['3'] = 3, ['4'] = 4}
  succ = {['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5', ['5'] = '6', ['6'] = '7', ['7'] = '8', ['8'] = '9'}
else
  out, set, num, succ = {t[1], t[2], 0, 0, 0, 0}, {0, 0, 0, 0}, {}, {}
end
local o, s = 2, 0
-- a: the run's first ARGV; k: the HMGET reply's index of the check's
-- first counter, whose field is ARGV[k + 1].
local a, k, nargv = 3 + n, 2, #ARGV
while a <= nargv do
  local c, m = num[ARGV[a]] or ARGV[a] + 0, num[ARGV[a + 1]] or ARGV[a + 1] + 0
  for _ = 1, c do
    local denied = 0
    for i = 1, m do
      local x = fresh and v[k + i - 1] or '0'
      out[o + 2 + i] = x
      -- Counts and limits are decimal integers and limits are positive
      -- (distinctArgs), so a count with fewer digits than its limit is
      -- below it without converting either: the common case, far from it.
      if denied == 0 then
        local l = ARGV[a + 1 + i]
        if #x >= #l and x + 0 >= l + 0 then denied = i end
      end
    end
    if denied == 0 then
      out[o + 1], out[o + 2] = '1', '0'
      for i = 1, m do
        local x = out[o + 2 + i]
        local y = succ[x]
        if not y then y = x + 1; y = small[y] or y end
        set[s + 1], set[s + 2] = ARGV[k + i], y
        s = s + 2
      end
    else
      out[o + 1], out[o + 2] = '0', small[denied] or denied
    end
    o, k = o + 2 + m, k + m
  end
  a = a + 2 + m
end
if s > 0 then
  if fresh then
    call('HSET', KEYS[1], unpack(set, 1, s))
  else
    -- The window's first write, as in luaWriteCounters (layout.go).
    if old then call('UNLINK', KEYS[1]) end
    call('HSET', KEYS[1], ` + luaNewBucket + `, 'w', tostring(w), unpack(set, 1, s))
    call('PEXPIREAT', KEYS[1], tostring((w + 2) * 60000 + tonumber(ARGV[1])))
  end
end
return table.concat(out, ' ', 1, o)
`)

// distinctArgs returns distinctScript's arguments for groups, whose
// counters are in layout at places, if the call is one of distinct checks
// (see above).
func distinctArgs(slack int64, layout *counterLayout, groups [][]*pendingCheck, places []place) ([]any, bool) {
	if len(layout.hashes) != 1 || layout.counters() != len(places) {
		return nil, false // another bucket, or a counter of two checks
	}
	for _, g := range groups {
		if len(g) != 1 || len(g[0].slots) > 0 {
			return nil, false
		}
		for _, c := range g[0].counters {
			if c.Limit <= 0 {
				return nil, false // the script compares digits of positive limits
			}
		}
	}
	// Each counter was added once, in the order of the checks, so the
	// fields are the checks' counters in order.
	fields := layout.fields[0]
	args := make([]any, 0, 2+len(fields)+4*len(groups))
	args = append(args, slack, len(fields))
	for _, f := range fields {
		args = append(args, f)
	}
	run := 0 // the index in args of the current run's length
	for i, g := range groups {
		if i > 0 && slices.EqualFunc(g[0].counters, groups[i-1][0].counters, sameLimit) {
			args[run] = args[run].(int) + 1
			continue
		}
		run = len(args)
		args = append(args, 1, len(g[0].counters))
		for _, c := range g[0].counters {
			args = append(args, c.Limit)
		}
	}
	return args, true
}

// sameLimit reports whether two counters have the same limit.
func sameLimit(a, b Counter) bool { return a.Limit == b.Limit }
