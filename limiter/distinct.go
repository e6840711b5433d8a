package limiter

import "github.com/redis/go-redis/v9"

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
// then per check the number m of its counters and their m limits. Returns
// what checkScript returns for the same checks.
var distinctScript = redis.NewScript(luaClock + `
local n = ARGV[2] + 0
local v = call('HMGET', KEYS[1], 'w', unpack(ARGV, 3, 2 + n))
local old = v[1]
local fresh = old and old + 0 == w
local small = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8'}
-- Sized up front when the call has several checks: growing a table costs
-- more than filling it (Lua rehashes it at 1, 2, 4, ... elements).
local out = n > 2 and {t[1], t[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} or {t[1], t[2], 0, 0, 0, 0}
local o, set, s = 2, {}, 0
-- a: the check's first ARGV; k: the HMGET reply's index of its first
-- counter, whose field is ARGV[k + 1].
local a, k, nargv = 3 + n, 2, #ARGV
while a <= nargv do
  local m = ARGV[a] + 0
  local denied = 0
  for i = 1, m do
    local x = fresh and v[k + i - 1] or '0'
    out[o + 2 + i] = x
    if denied == 0 and x + 0 >= ARGV[a + i] + 0 then denied = i end
  end
  if denied == 0 then
    out[o + 1], out[o + 2] = '1', '0'
    for i = 1, m do
      local x = out[o + 2 + i] + 1
      set[s + 1], set[s + 2] = ARGV[k + i], small[x] or x
      s = s + 2
    end
  else
    out[o + 1], out[o + 2] = '0', small[denied] or denied
  end
  o, k, a = o + 2 + m, k + m, a + 1 + m
end
if s > 0 then
  if fresh then
    call('HSET', KEYS[1], unpack(set, 1, s))
  else
    -- The window's first write, as in luaWriteCounters (layout.go).
    if old then call('UNLINK', KEYS[1]) end
    call('HSET', KEYS[1], 'w', tostring(w), unpack(set, 1, s))
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
	}
	// Each counter was added once, in the order of the checks, so the
	// fields are the checks' counters in order.
	fields := layout.fields[0]
	args := make([]any, 0, 2+len(fields)+len(groups)+len(places))
	args = append(args, slack, len(fields))
	for _, f := range fields {
		args = append(args, f)
	}
	for _, g := range groups {
		args = append(args, len(g[0].counters))
		for _, c := range g[0].counters {
			args = append(args, c.Limit)
		}
	}
	return args, true
}
