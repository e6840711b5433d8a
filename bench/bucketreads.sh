#!/usr/bin/env bash
# bench/bucketreads.sh: what Redis spends reading a call's counters from a
# large bucket (limiter/layout.go), cold and warm in the CPU's caches.
# Starts a private redis-server on a free port and fills a bucket with
# the two counters of each of N users ("{u<i>}:user", "{u<i>}:group:1"),
# as the benchmark's users scenarios do, and a second bucket with one
# field per user (below). Then, per number of users, 20,000
# script calls each read the 14 counters of 7 users (a call's ≈ 7 checks)
# with one HMGET: first 7 users drawn at random, whose counters the CPU's
# caches mostly do not hold, then the same 7 users every time, whose they
# do. Last, 7 users at random from the second bucket, whose one field per
# user holds both counters ("{u<i>}": "<user> <group>"), a layout
# this project does not have, to show what halving the fields a check
# looks up would save. INFO commandstats gives each HMGET's mean time.
# Then, in a bucket of 100,000 users of each layout, whole calls: 20,000
# script calls each of 7 random users' checks (TIME, one HMGET, each
# counter + 1, one HSET), alternately three times per layout after one
# untimed pass each, where the packed layout parses and builds each
# user's field in Lua; sent pipelined (redis-cli --pipe), timed by INFO
# commandstats. Last, the same calls of the current layout in a new
# bucket, as after a window's first write, where about half of their
# checks add new fields, and then once more, where every field exists:
# what the window's new bucket costs its writes, three times.
# Under a minute (22 s on 12-05 23:00); run on an idle machine.
set -euo pipefail

. "$(dirname "$0")/private-redis.sh"
# usec_per_call prints the mean time of the command $1 since the last
# CONFIG RESETSTAT, from INFO commandstats.
usec_per_call() { cli info commandstats | tr -d '\r' | sed -n "s/^cmdstat_$1:.*usec_per_call=\([0-9.]*\).*/\1/p"; }

# reads reads the counters of 7 users: drawn at random from ARGV[1] users,
# or users 1 to 7 if ARGV[2] is "same"; two fields per user, or one if
# ARGV[3] is "packed".
reads="local f, packed = {}, ARGV[3] == 'packed'
for i = 1, 7 do
  local u = ARGV[2] == 'same' and i or math.random(1, tonumber(ARGV[1]))
  if packed then
    f[i] = '{u' .. u .. '}'
  else
    f[2 * i - 1], f[2 * i] = '{u' .. u .. '}:user', '{u' .. u .. '}:group:1'
  end
end
redis.call('HMGET', KEYS[1], 'w', unpack(f))
return 1"

# measure prints the mean time of 20,000 reads of bucket with reads' ARGV.
measure() {
	local bucket=$1
	shift
	cli config resetstat >/dev/null
	cli -r 20000 eval "$reads" 1 "$bucket" "$@" >/dev/null
	usec_per_call hmget
}

# fill fills the bucket b:c:counts with the two counters of each of $1
# users and b:c:packed with one field per user.
fill() {
	cli eval "for _, b in ipairs(KEYS) do redis.call('HSET', b, 'encoding', string.rep('x', 100)) end
		for i = 1, $1 do
			redis.call('HSET', KEYS[1], '{u' .. i .. '}:user', tostring(i % 50), '{u' .. i .. '}:group:1', tostring(i % 7))
			redis.call('HSET', KEYS[2], '{u' .. i .. '}', (i % 50) .. ' ' .. (i % 7))
		end return 1" 2 b:c:counts b:c:packed >/dev/null
}

for users in 1000 100000 200000; do
	cli flushall >/dev/null
	fill "$users"
	echo "$users users, HMGET of 14 counters: random users $(measure b:c:counts "$users" random) µs;" \
		"same users $(measure b:c:counts "$users" same) µs;" \
		"random users, one field each $(measure b:c:packed "$users" random packed) µs"
done

# checks is a call of 7 users' checks as the scripts make it: read the
# counters with one HMGET, add 1 to each, write them with one HSET; with
# ARGV[1] "packed", ARGV[2..8] are 7 users' fields of both counters
# ("<user> <group>"), else ARGV[2..15] their 14 counters.
checks="local t = redis.call('TIME')
local packed = ARGV[1] == 'packed'
local n = packed and 7 or 14
local v = redis.call('HMGET', KEYS[1], 'w', unpack(ARGV, 2, n + 1))
local set, find, sub = {}, string.find, string.sub
for i = 1, n do
  local s, x = v[i + 1], 1
  if packed then
    local a, b = 1, 1
    if s then
      local sp = find(s, ' ', 1, true)
      a, b = sub(s, 1, sp - 1) + 1, sub(s, sp + 1) + 1
    end
    x = a .. ' ' .. b
  elseif s then
    x = s + 1
  end
  set[2 * i - 1], set[2 * i] = ARGV[i + 1], x
end
redis.call('HSET', KEYS[1], unpack(set))
return 1"

# calls writes, as redis-cli --pipe reads it, 20,000 EVALSHAs of script
# sha on bucket, each of 7 users drawn at random from users (the same
# users for both layouts), in layout ("counts" or "packed").
calls() {
	python3 - "$@" <<'PY'
import random, sys
sha, bucket, users, layout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
draw = random.Random(1)
out = []
for _ in range(20000):
    args = ['EVALSHA', sha, '1', bucket, layout]
    for u in (draw.randint(1, users) for _ in range(7)):
        args += ['{u%d}' % u] if layout == 'packed' else ['{u%d}:user' % u, '{u%d}:group:1' % u]
    out.append('*%d\r\n' % len(args) + ''.join('$%d\r\n%s\r\n' % (len(a), a) for a in args))
sys.stdout.write(''.join(out))
PY
}

users=100000
cli flushall >/dev/null
fill "$users"
sha=$(cli script load "$checks")
calls "$sha" b:c:counts "$users" counts >"$redis_dir/counts.resp"
calls "$sha" b:c:packed "$users" packed >"$redis_dir/packed.resp"
# Round 0 is not timed: every call rewrites its counters, whose new values
# Redis allocates elsewhere than the fill put them, next to their user's
# other counter; the later rounds read them as a bucket that has taken
# writes for a while does.
declare -A times
for round in 0 1 2 3; do
	for layout in counts packed; do
		cli config resetstat >/dev/null
		cli --pipe <"$redis_dir/$layout.resp" >/dev/null
		((round == 0)) || times[$layout]+=" $(usec_per_call evalsha)"
	done
done
echo "$users users, a call of 7 random users' checks (µs in the script, three times):" \
	"two fields per user${times[counts]}; one field each${times[packed]}"

# A window's first write starts a new bucket (limiter/layout.go), so a
# counter's first check of a window adds its field, later ones overwrite
# it. The same calls in a new bucket (the first pass adds about 150,000
# fields) and then again (every field exists).
writes=
for round in 1 2 3; do
	cli del b:c:counts >/dev/null
	cli hset b:c:counts encoding "$(printf 'x%.0s' {1..100})" >/dev/null
	for pass in new again; do
		cli config resetstat >/dev/null
		cli --pipe <"$redis_dir/counts.resp" >/dev/null
		writes+=" $pass $(usec_per_call evalsha)"
	done
	writes+=";"
done
echo "$users users, the same calls in a new bucket, then again (µs in the script, three times):$writes"
