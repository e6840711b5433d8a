package limiter

import "github.com/redis/go-redis/v9"

// reserveScript checks one request like checkScript and, when every
// counter is far from its limit, increments them all by a grant g of up to
// want units instead of 1, in the same atomic step: the request takes one
// unit and the limiter may admit g-1 further requests of the same counter
// set without asking Redis (reserve.go). A grant never exceeds any
// counter's room divided by reserveShare, so most of what is left stays
// free for every other check; where that allows less than 2 the request is
// checked exactly as by checkScript (g = 1).
//
// KEYS: the counter hashes (layout.go). ARGV[1]: the expiry slack in ms;
// ARGV[2]: want; ARGV[3]: reserveShare; then the counter layout
// (counterLayout.appendArgs); then per counter its number in the layout
// and its limit. Returns one string of space-separated integers: the
// Redis clock as TIME gave it (redisClock), g (0 when refused), the
// 1-based index of the first full counter (0 if none), then the counts
// before the request.
var reserveScript = redis.NewScript(luaClock + `
local grant = tonumber(ARGV[2])
local share = tonumber(ARGV[3])
local a = 4
` + luaReadCounters + `
local idx, before = {}, {}
local denied, m = 0, 0
while a <= #ARGV do
  m = m + 1
  local j = tonumber(ARGV[a])
  idx[m], before[m] = j, count[j]
  local room = tonumber(ARGV[a + 1]) - before[m]
  if room <= 0 and denied == 0 then denied = m end
  grant = math.min(grant, math.floor(room / share))
  a = a + 2
end
if denied > 0 then
  grant = 0
elseif grant < 1 then
  grant = 1
end
if grant > 0 then
  for i = 1, m do
    count[idx[i]] = before[i] + grant
    dirty[idx[i]] = true
  end
end
` + luaWriteCounters + `
local out = {t[1], t[2], grant, denied}
for i = 1, m do out[4 + i] = text[idx[i]] end
return table.concat(out, ' ')
`)

// handBackScript gives back units of reservations that were not used: it
// decrements each counter by its units, only while the counter is still
// in the window the units were granted in (a later window starts from 0
// anyway), and never below 0.
//
// KEYS: per counter its hash (layout.go), each counter once. ARGV: per
// counter its field, its window number and its units. Returns the number
// of units given back.
var handBackScript = redis.NewScript(`
local back = 0
for i = 1, #KEYS do
  local f = ARGV[3 * i - 2]
  local v = redis.call('HMGET', KEYS[i], 'w', f)
  if tonumber(v[1]) == tonumber(ARGV[3 * i - 1]) then
    local n = tonumber(v[2]) or 0
    local u = math.min(n, tonumber(ARGV[3 * i]))
    if u > 0 then
      redis.call('HSET', KEYS[i], f, n - u)
      back = back + u
    end
  end
end
return back
`)

// reserveShare is the most of a counter's room one grant takes: 1/16.
// After a grant every counter keeps 15/16 of its room for the checks of
// all other instances and counter sets, and a counter with fewer than
// 2*reserveShare units left is only ever checked one request at a time.
const reserveShare = 16
