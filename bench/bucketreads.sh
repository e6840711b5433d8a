#!/usr/bin/env bash
# bench/bucketreads.sh: what Redis spends reading a call's counters from a
# large bucket (limiter/layout.go), cold and warm in the CPU's caches.
# Starts a private redis-server on a free port and fills one bucket with
# the two counters of each of N users ("{u<i>}:user", "{u<i>}:group:1"),
# as the benchmark's users scenarios do. Then, per bucket size, 20,000
# script calls each read the 14 counters of 7 users (a call's ≈ 7 checks)
# with one HMGET: first 7 users drawn at random, whose counters the CPU's
# caches mostly do not hold, then the same 7 users every time, whose they
# do. INFO commandstats gives each HMGET's mean time. ~30 s; run on an
# idle machine.
set -euo pipefail

. "$(dirname "$0")/private-redis.sh"
hmget_usec() { cli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_hmget:.*usec_per_call=\([0-9.]*\).*/\1/p'; }

# reads reads the counters of 7 users: drawn at random from ARGV[1] users,
# or users 1 to 7 if ARGV[2] is "same".
reads="local f = {}
for i = 1, 7 do
  local u = ARGV[2] == 'same' and i or math.random(1, tonumber(ARGV[1]))
  f[2 * i - 1], f[2 * i] = '{u' .. u .. '}:user', '{u' .. u .. '}:group:1'
end
redis.call('HMGET', KEYS[1], 'w', unpack(f))
return 1"

for users in 1000 100000 200000; do
	cli flushall >/dev/null
	cli eval "redis.call('HSET', KEYS[1], 'encoding', string.rep('x', 100))
		for i = 1, $users do
			redis.call('HSET', KEYS[1], '{u' .. i .. '}:user', tostring(i % 50), '{u' .. i .. '}:group:1', tostring(i % 7))
		end return 1" 1 b:c:counts >/dev/null
	line="$users users ($((2 * users)) counters), HMGET of 14 counters:"
	for which in random same; do
		cli config resetstat >/dev/null
		cli -r 20000 eval "$reads" 1 b:c:counts "$users" "$which" >/dev/null
		line="$line $which users $(hmget_usec) µs;"
	done
	echo "${line%;}"
done
