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
// KEYS: the counter keys. ARGV[1]: the expiry slack in ms; ARGV[2]: want;
// ARGV[3]: reserveShare; then the counter limits. Returns one string of space-separated integers:
// resetMs, the window number, g (0 when refused), the 1-based index of the
// first full counter (0 if none), then the counts before the request.
var reserveScript = redis.NewScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = math.floor(ms / 60000)
local wend = (w + 1) * 60000
local grant = tonumber(ARGV[2])
local share = tonumber(ARGV[3])
local before, fresh = {}, {}
local denied = 0
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'w', 'n')
  local c = 0
  if v[1] and tonumber(v[1]) == w then c = tonumber(v[2]) or 0 else fresh[i] = true end
  before[i] = c
  local room = tonumber(ARGV[3 + i]) - c
  if room <= 0 and denied == 0 then denied = i end
  grant = math.min(grant, math.floor(room / share))
end
if denied > 0 then
  grant = 0
elseif grant < 1 then
  grant = 1
end
if grant > 0 then
  local exp = string.format('%d', wend + tonumber(ARGV[1]))
  for i = 1, #KEYS do
    redis.call('HSET', KEYS[i], 'w', string.format('%d', w), 'n', before[i] + grant)
    if fresh[i] then redis.call('PEXPIREAT', KEYS[i], exp) end
  end
end
local out = {wend - ms, w, grant, denied}
for i = 1, #KEYS do out[#out + 1] = before[i] end
return table.concat(out, ' ')
`)

// handBackScript gives back units of reservations that were not used: it
// decrements each counter by its units, only while the counter is still
// in the window the units were granted in (a later window starts from 0
// anyway), and never below 0.
//
// KEYS: the counter keys, each once. ARGV: per key its window number and
// its units. Returns the number of units given back.
var handBackScript = redis.NewScript(`
local back = 0
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'w', 'n')
  if v[1] and tonumber(v[1]) == tonumber(ARGV[2 * i - 1]) then
    local n = tonumber(v[2]) or 0
    local u = math.min(n, tonumber(ARGV[2 * i]))
    if u > 0 then
      redis.call('HSET', KEYS[i], 'n', n - u)
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
