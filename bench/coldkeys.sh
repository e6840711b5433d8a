#!/usr/bin/env bash
# What a Redis command costs on a key not touched for a while, on an idle
# machine, and whether short GET pipelines beside checks hurt them less than
# long ones — the two measurements behind the README's "What limits many
# users" and "p99 at 2 connections" (Benchmark section).
#
# It starts a private redis-server on a free port, fills it with COLD_KEYS
# (300,000) counter-like hashes (fields w, n, :user, :group:2; an expiry of
# an hour) and as many strings of 292 bytes, then:
#
#   1. HMGET of a random hash against HMGET of one hash, with redis-benchmark
#      (-c 4, 300,000 each, twice), and the time per call Redis reports in
#      INFO commandstats; then the same without expiries, and with
#      transparent huge pages for Redis (--disable-thp no,
#      MALLOC_CONF=thp:always);
#   2. a script doing that HMGET, at 2 connections, with redis-benchmark's
#      latency summary (p99), alone, beside GET pipelines of 256 random
#      strings 50 times a second, and beside pipelines of 32 keys 400 times
#      a second (the same GETs per second, sent by a small Python client).
#
# Needs redis-server, redis-cli, redis-benchmark and python3. About two
# minutes on the project's 2-core machine. Run it on an idle machine.
set -euo pipefail

n=${COLD_KEYS:-300000}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
work=$(mktemp -d)
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# fill.lua: ARGV[1] keys; ARGV[2] "ttl" gives them an expiry of an hour.
cat >"$work/fill.lua" <<'EOF'
local pad = string.rep('x', 280)
local ttl = ARGV[2] == 'ttl'
for i = 0, tonumber(ARGV[1]) - 1 do
  local id = string.format('%012d', i)
  local h = 'c:{u' .. id .. '}'
  redis.call('HSET', h, 'w', '29431234', 'n', '2', ':user', '5', ':group:2', '5')
  if ttl then redis.call('PEXPIRE', h, 3600000) end
  redis.call('SET', 'snap:' .. id, pad .. id)
  if ttl then redis.call('PEXPIRE', 'snap:' .. id, 3600000) end
end
return 1
EOF

# pipelines.py: N GETs of random strings per pipeline, R pipelines a second, S seconds.
cat >"$work/pipelines.py" <<'EOF'
import random, socket, sys, time
port, n, rate, secs = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
s = socket.create_connection(('127.0.0.1', port))
want = n * len('$292\r\n' + 'x' * 292 + '\r\n')
end, due = time.time() + secs, time.time()
while time.time() < end:
    keys = ['snap:%012d' % random.randrange(int(sys.argv[5])) for _ in range(n)]
    s.sendall(''.join('*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n' % (len(k), k) for k in keys).encode())
    got = 0
    while got < want:
        got += len(s.recv(65536))
    due += 1 / rate
    time.sleep(max(0, due - time.time()))
EOF

start() { # extra redis-server arguments...
	redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
		--dir "$work" --logfile "$work/redis.log" "$@" &
	for _ in $(seq 100); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "coldkeys: redis-server did not start" >&2
	exit 1
}

stop() { redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; wait; }

hmget_cost() { # label
	for key in 'c:{u__rand_int__}' 'c:{u000000000007}' 'c:{u__rand_int__}' 'c:{u000000000007}'; do
		redis-cli -p "$port" config resetstat >/dev/null
		redis-benchmark -p "$port" -c 4 -n 300000 -r "$n" -q HMGET "$key" w n :user :group:2 >/dev/null
		echo "$1 HMGET $key: $(redis-cli -p "$port" info commandstats | grep '^cmdstat_hmget' | cut -d, -f3)"
	done
}

echo "== 1. HMGET of a random hash against one hash, $n hashes and $n strings"
start
redis-cli -p "$port" --eval "$work/fill.lua" , "$n" ttl >/dev/null
hmget_cost "with expiries"
stop
start
redis-cli -p "$port" --eval "$work/fill.lua" , "$n" none >/dev/null
hmget_cost "no expiries"
stop
MALLOC_CONF=thp:always start --disable-thp no
redis-cli -p "$port" --eval "$work/fill.lua" , "$n" ttl >/dev/null
echo "huge pages: $(grep AnonHugePages "/proc/$(redis-cli -p "$port" info server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')/smaps_rollup")"
hmget_cost "huge pages"
stop

echo "== 2. p99 of checks at 2 connections beside GET pipelines (ms: avg min p50 p95 p99 max)"
start
redis-cli -p "$port" --eval "$work/fill.lua" , "$n" ttl >/dev/null
sha=$(redis-cli -p "$port" script load "return redis.call('HMGET', KEYS[1], 'w', 'n', ':user', ':group:2')")
checks() { redis-benchmark -p "$port" -c 2 -n 150000 -r "$n" EVALSHA "$sha" 1 'c:{u__rand_int__}' 2>/dev/null |
	grep -A2 'latency summary' | tail -1; }
for _ in 1 2; do
	echo "alone:            $(checks)"
	python3 "$work/pipelines.py" "$port" 256 50 8 "$n" &
	sleep 0.3
	echo "256 GETs x 50/s:  $(checks)"
	wait $!
	python3 "$work/pipelines.py" "$port" 32 400 8 "$n" &
	sleep 0.3
	echo "32 GETs x 400/s:  $(checks)"
	wait $!
done
stop
