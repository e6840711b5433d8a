#!/usr/bin/env bash
# bench/bucketmem.sh: what a counter bucket (limiter/layout.go) costs in
# Redis memory, and how long Redis's main thread takes to free one. Starts
# a private redis-server on a free port, fills one bucket with N counters
# ("{u<i>}:user", small counts), reads used_memory before and after, then
# times a DEL of it from SLOWLOG (the main-thread free that an expiry does
# without lazyfree-lazy-expire). ~30 s; run on an idle machine.
set -euo pipefail

. "$(dirname "$0")/private-redis.sh"
used() { cli info memory | tr -d '\r' | sed -n 's/^used_memory://p'; }

for n in 100000 1000000; do
	cli flushall >/dev/null
	before=$(used)
	cli eval "for i = 1, $n do redis.call('HSET', 'b:c:counts', '{u' .. i .. '}:user', tostring(i % 50)) end
		redis.call('HSET', 'b:c:counts', 'w', '29420000') return 1" 0 >/dev/null
	after=$(used)
	cli config set slowlog-log-slower-than 0 >/dev/null
	cli slowlog reset >/dev/null
	cli del b:c:counts >/dev/null
	del_us=$(cli slowlog get 1 | sed -n 3p)
	cli config set slowlog-log-slower-than 10000 >/dev/null
	echo "$n counters: $(((after - before) / n)) bytes per counter; DEL on the main thread: $del_us µs"
done
