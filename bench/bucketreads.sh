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
# ~20 s; run on an idle machine.
set -euo pipefail

. "$(dirname "$0")/private-redis.sh"
hmget_usec() { cli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_hmget:.*usec_per_call=\([0-9.]*\).*/\1/p'; }

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
	hmget_usec
}

for users in 1000 100000 200000; do
	cli flushall >/dev/null
	cli eval "for _, b in ipairs(KEYS) do redis.call('HSET', b, 'encoding', string.rep('x', 100)) end
		for i = 1, $users do
			redis.call('HSET', KEYS[1], '{u' .. i .. '}:user', tostring(i % 50), '{u' .. i .. '}:group:1', tostring(i % 7))
			redis.call('HSET', KEYS[2], '{u' .. i .. '}', (i % 50) .. ' ' .. (i % 7))
		end return 1" 2 b:c:counts b:c:packed >/dev/null
	echo "$users users, HMGET of 14 counters: random users $(measure b:c:counts "$users" random) µs;" \
		"same users $(measure b:c:counts "$users" same) µs;" \
		"random users, one field each $(measure b:c:packed "$users" random packed) µs"
done
