#!/usr/bin/env bash
# The RPM-limits benchmark (spec §11). It builds Caddy with this plugin, a
# small upstream and the load generator, starts a private redis-server on a
# free port and a dedicated Postgres schema, runs ONE Caddy with three sites
# in front of the same upstream and measures, interleaved in one run:
#
#   plain     reverse_proxy only
#   admitted  rpm + reverse_proxy; the user and group limits (10^9) apply but
#             are never hit: each request waits for one EVALSHA, which concurrent
#             requests share (see limiter/batch.go)
#   capped    the admitted site with a user whose concurrency cap (10^6)
#             is never reached: each request takes a place in the same
#             EVALSHA and gives it back with a batched asynchronous ZREM
#             (see limiter/lease.go); compare with admitted
#   refused   rpm + reverse_proxy; a user limit of 1 is hit, so after the
#             first 429 of the window the local deny cache answers
#   unknown   the admitted site with a new random well-formed key on every
#             request (the loadgen's @random key): 401 INVALID_API_KEY from
#             the key filter, no store load, no Redis command
#   users     a site like the admitted one, in a Caddy process of its own
#             (its L1 and that L1's GC are part of its cost, not of the
#             others'), with USERS keys of USERS users (limits 10^9,
#             in the admitted group), each request one key drawn uniformly at
#             random (the loadgen's @range key); the warm-up first sends each
#             key once, so the segments measure the steady state: how often
#             L1 answers, and Caddy's and Redis's CPU per request
#   users-large  the same (in another Caddy process) with USERS_LARGE keys
#             of as many other users, after
#             the same pass over them (which fills L2 too): L1 and L2 hits
#   admitted-noreserve  the admitted scenario against a second Caddy process
#             (same Redis and Postgres) whose global rpm option has
#             reservation_ttl off: every request goes to Redis
#
# After the interleaved phases, one user with a limit of EXACT_LIMIT per
# minute is driven to it from two Caddy processes at once, within one
# rate-limit window, with the connections split between them; the report
# says "exact: yes" if the 200s summed over both equal the limit and the
# user's counter in Redis too. Twice: "exact" through the first Caddy and a
# third one (reservations on, the default), "exact-noreserve" through the
# second and a fourth (reservation_ttl off), each with a user of its own.
#
# and writes the markdown report to bench/results.md (RESULTS_APPEND=1 adds
# the run to the file instead of replacing it).
#
# Environment (defaults):
#   DURATION=20s       measured time per scenario, split over ROUNDS (plain
#                      runs before every other scenario's segment and at
#                      the end of each round, so it gets DURATION per other
#                      scenario, plus one)
#   WARMUP=10s         warm-up, split over the scenarios (after the users
#                      scenario's pass over its keys)
#   USERS=50000        keys (and users) of the users scenario; 0: no users
#                      scenario
#   USERS_LARGE=200000 keys (and users) of the users-large scenario; 0: none
#   NORESERVE=1        the admitted-noreserve scenario; 0: none
#   EXACT_LIMIT=20000  the limit of the exact runs' users; 0: no exact runs
#                      (and no third and fourth Caddy)
#   EXACT_DURATION=10s how long each exact run drives its user (at most 50s;
#                      the limit must be reached well within it)
#   ROUNDS=5           interleaved rounds (rotated order, plain between): the
#                      paired figures are medians of five 4-s segments, as one
#                      segment on this VM may be 10-25 % off its neighbours
#   CONNECTIONS=32     concurrent keep-alive connections of the load generator
#   CADDY_GOMAXPROCS=$(nproc)  LOADGEN_GOMAXPROCS=1  UPSTREAM_GOMAXPROCS=1
#   LATENCY_CONNECTIONS=2   a second, unsaturated phase at this concurrency
#                      (0: none), LATENCY_DURATION (default DURATION/2)
#   DATABASE_URL=postgres://root@127.0.0.1:5432/test?sslmode=disable
#   BENCH_DB=private   create a throwaway database (dropped at the end) on
#                      that server and the bench schema in it, so nothing
#                      else touches its statistics; "shared" puts the schema
#                      into DATABASE_URL's database
#   REDIS_UNIX=1       Caddy reaches Redis over a Unix socket instead of TCP
#                      on 127.0.0.1 (the load generator's INFO reads stay on
#                      TCP)
#   RATELIMIT_HEADERS=all  the admitted site's ratelimit_headers (all, ietf,
#                      legacy or off; the refused site keeps the default)
#   UPSTREAM_HEADERS=0 extra headers in the upstream's answer (it sends
#                      Content-Type, Content-Length and Date; APIs such as
#                      OpenAI's send a dozen more)
#   ALTERNATE="plain admitted users users-large"  after the phases, each of
#                      these scenarios alternates with plain every SLICE
#                      (250ms) for ALTERNATE_DURATION (20s) of its own
#                      ("plain" against itself: the noise floor; a scenario
#                      the run lacks is skipped; empty: none)
#   PROFILE=1          also save Caddy CPU profiles of each scenario's first
#                      segment into bench/out/ (skews those segments)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-10s}
USERS=${USERS:-50000}
USERS_LARGE=${USERS_LARGE:-200000}
NORESERVE=${NORESERVE:-1}
EXACT_LIMIT=${EXACT_LIMIT:-20000}
EXACT_DURATION=${EXACT_DURATION:-10s}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-32}
LATENCY_CONNECTIONS=${LATENCY_CONNECTIONS:-2}
LATENCY_DURATION=${LATENCY_DURATION:-0}
BENCH_DB=${BENCH_DB:-private}
NPROC=$(nproc)
CADDY_GOMAXPROCS=${CADDY_GOMAXPROCS:-$NPROC}
LOADGEN_GOMAXPROCS=${LOADGEN_GOMAXPROCS:-1}
UPSTREAM_GOMAXPROCS=${UPSTREAM_GOMAXPROCS:-1}
DATABASE_URL=${DATABASE_URL:-postgres://root@127.0.0.1:5432/test?sslmode=disable}
PROFILE=${PROFILE:-}
REDIS_UNIX=${REDIS_UNIX:-}
RATELIMIT_HEADERS=${RATELIMIT_HEADERS:-all}
UPSTREAM_HEADERS=${UPSTREAM_HEADERS:-0}
ALTERNATE=${ALTERNATE-plain admitted users users-large}
ALTERNATE_DURATION=${ALTERNATE_DURATION:-20s}
SLICE=${SLICE:-250ms}
RESULTS=${RESULTS:-$root/bench/results.md}
command_line="ALTERNATE='$ALTERNATE' ALTERNATE_DURATION=$ALTERNATE_DURATION SLICE=$SLICE DURATION=$DURATION WARMUP=$WARMUP USERS=$USERS USERS_LARGE=$USERS_LARGE NORESERVE=$NORESERVE EXACT_LIMIT=$EXACT_LIMIT EXACT_DURATION=$EXACT_DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS LATENCY_CONNECTIONS=$LATENCY_CONNECTIONS BENCH_DB=$BENCH_DB CADDY_GOMAXPROCS=$CADDY_GOMAXPROCS LOADGEN_GOMAXPROCS=$LOADGEN_GOMAXPROCS UPSTREAM_GOMAXPROCS=$UPSTREAM_GOMAXPROCS${REDIS_UNIX:+ REDIS_UNIX=$REDIS_UNIX} RATELIMIT_HEADERS=$RATELIMIT_HEADERS UPSTREAM_HEADERS=$UPSTREAM_HEADERS bench/run.sh"

for bin in redis-server psql go; do
	command -v "$bin" >/dev/null || { echo "bench: $bin is required" >&2; exit 1; }
done

work=$(mktemp -d /tmp/rpm-bench.XXXXXX)
schema="rpm_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
pids=()
schema_created=
db_created=
admin_url=$DATABASE_URL

cleanup() {
	local status=$?
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	if [[ -n $schema_created ]]; then
		psql "$DATABASE_URL" -qAtc "set client_min_messages = warning; drop schema if exists $schema cascade" >/dev/null || echo "bench: could not drop schema $schema" >&2
	fi
	if [[ -n $db_created ]]; then
		psql "$admin_url" -qAtc "drop database if exists $schema with (force)" >/dev/null || echo "bench: could not drop database $schema" >&2
	fi
	if ((status != 0)); then
		echo "bench: failed; logs kept in $work" >&2
		tail -n 20 "$work"/*.log >&2 2>/dev/null || true
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_tcp() { # host port what
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "bench: $3 did not listen on $1:$2" >&2
	return 1
}

echo "== building into $work"
go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/loadgen" ./bench/loadgen
go build -o "$work/upstream" ./bench/upstream

echo "== private redis-server"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
	--unixsocket "$work/redis.sock" --unixsocketperm 700 \
	--dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=($!)
wait_tcp 127.0.0.1 "$redis_port" redis-server
redis_url=redis://127.0.0.1:$redis_port
if [[ -n $REDIS_UNIX ]]; then
	redis_url=unix://$work/redis.sock
fi

echo "== upstream"
upstream_port=$(free_port)
GOMAXPROCS=$UPSTREAM_GOMAXPROCS "$work/upstream" -addr "127.0.0.1:$upstream_port" -headers "$UPSTREAM_HEADERS" >"$work/upstream.log" 2>&1 &
upstream_pid=$!
pids+=($!)
wait_tcp 127.0.0.1 "$upstream_port" upstream

if [[ $BENCH_DB == private ]]; then
	echo "== Postgres database and schema $schema"
	psql "$admin_url" -qAtc "create database $schema" >/dev/null
	db_created=1
	DATABASE_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$admin_url" "$schema")
else
	echo "== Postgres schema $schema"
fi
psql "$DATABASE_URL" -qAtc "create schema $schema" >/dev/null
schema_created=1
sep='?'
[[ $DATABASE_URL == *\?* ]] && sep='&'
dsn="${DATABASE_URL}${sep}search_path=$schema"
"$work/caddy" rpm migrate --database-url "$dsn"
# Ids far above those of other schemas (defensive: with BENCH_DB=shared, an
# invalidation of user 1 elsewhere can never name ours).
PGOPTIONS="-c search_path=$schema" psql "$DATABASE_URL" -qAtc "
	alter table rpm_users alter column id restart with 910000001;
	alter table rpm_groups alter column id restart with 910000001;
	alter table rpm_api_keys alter column id restart with 910000001;" >/dev/null
seed() { PGOPTIONS="-c search_path=$schema" psql "$DATABASE_URL" -qAtc "$1" | head -n1; }
group_id=$(seed "insert into rpm_groups (name, rpm_limit) values ('bench', 1000000000) returning id")
admitted_user=$(seed "insert into rpm_users (username, rpm_limit) values ('bench-admitted', 1000000000) returning id")
refused_user=$(seed "insert into rpm_users (username, rpm_limit) values ('bench-refused', 1) returning id")
capped_user=$(seed "insert into rpm_users (username, rpm_limit, concurrency) values ('bench-capped', 1000000000, 1000000) returning id")
admitted_key=$("$work/caddy" rpm key create --database-url "$dsn" --user "$admitted_user" --group "$group_id" --name bench 2>/dev/null)
refused_key=$("$work/caddy" rpm key create --database-url "$dsn" --user "$refused_user" --group "$group_id" --name bench 2>/dev/null)
capped_key=$("$work/caddy" rpm key create --database-url "$dsn" --user "$capped_user" --group "$group_id" --name bench 2>/dev/null)
[[ -n $admitted_key && -n $refused_key && -n $capped_key ]] || { echo "bench: key creation failed" >&2; exit 1; }
# The exact runs' users: a limit of EXACT_LIMIT, in the bench group.
exact_user=() exact_key=()
if ((EXACT_LIMIT > 0)); then
	for mode in reserve noreserve; do
		exact_user+=("$(seed "insert into rpm_users (username, rpm_limit) values ('bench-exact-$mode', $EXACT_LIMIT) returning id")")
		exact_key+=("$("$work/caddy" rpm key create --database-url "$dsn" --user "${exact_user[-1]}" --group "$group_id" --name bench 2>/dev/null)")
		[[ -n ${exact_key[-1]} ]] || { echo "bench: key creation failed" >&2; exit 1; }
	done
fi
# The users scenarios' keys: user i (1 … n) has the key <prefix><i
# zero-padded to 47 characters in all> (as long as a created key), the
# loadgen's @range:<prefix>:<n>; the hash is computed here, as the store
# computes it (SHA-256 of the key's bytes). One statement each, so the
# triggers send one notification "all" (Caddy is not started yet).
seed_users() { # key prefix, username prefix, n
	echo "== $3 users with one key each ($1…)"
	PGOPTIONS="-c search_path=$schema" psql "$DATABASE_URL" -qAtc "
		with u as (
			insert into rpm_users (username, rpm_limit)
			select '$2' || i, 1000000000 from generate_series(1, $3) i
			returning id, substr(username, $((${#2} + 1)))::bigint as i)
		insert into rpm_api_keys (key_hash, key_prefix, name, user_id, group_id)
		select sha256(convert_to(k, 'UTF8')), left(k, 13), 'bench-users', u.id, $group_id
		from u, lateral (select '$1' || lpad(u.i::text, $((47 - ${#1})), '0') as k) key" >/dev/null
}
if ((USERS > 0)); then seed_users sk-rpm-bench bench-user- "$USERS"; fi
if ((USERS_LARGE > 0)); then seed_users sk-rpm-benchL bench-large- "$USERS_LARGE"; fi

# Caddy processes: all with the same store and Redis. Each is measured as
# "caddy" (the loadgen sums their CPU times and metrics).
caddy_args=()
site() { # port, handler lines
	cat <<SITE
http://127.0.0.1:$1 {
	bind 127.0.0.1
$2	reverse_proxy 127.0.0.1:$upstream_port {
		transport http {
			keepalive_idle_conns_per_host 1024
		}
	}
}
SITE
}
start_caddy() { # name, extra rpm option lines, site ports and handler lines as in site
	local name=$1 options=$2 admin_port
	shift 2
	admin_port=$(free_port)
	{
		cat <<GLOBAL
{
	admin 127.0.0.1:$admin_port
	auto_https off
	persist_config off
	rpm {
		postgres "$dsn"
		redis $redis_url
		key_prefix ${redis_prefix:-bench:}
$options	}
}
GLOBAL
		while (($# > 0)); do
			site "$1" "$2"
			shift 2
		done
	} >"$work/$name.Caddyfile"
	GOMAXPROCS=$CADDY_GOMAXPROCS "$work/caddy" run --config "$work/$name.Caddyfile" --adapter caddyfile >"$work/$name.log" 2>&1 &
	pids+=($!)
	caddy_args+=(-pid "caddy=$!" -metrics "http://127.0.0.1:$admin_port/metrics")
	last_admin_port=$admin_port
}
echo "== Caddy"
plain_port=$(free_port)
admitted_port=$(free_port)
refused_port=$(free_port)
start_caddy caddy "" "$plain_port" "" "$admitted_port" $'\trpm {\n\t\tratelimit_headers '"$RATELIMIT_HEADERS"$'\n\t}\n' "$refused_port" $'\trpm\n'
admin_port=$last_admin_port
listen=("$admin_port" "$plain_port" "$admitted_port" "$refused_port")
noreserve_target=() exact_targets=()
if [[ $NORESERVE == 1 ]] || ((EXACT_LIMIT > 0)); then
	echo "== second Caddy: reservation_ttl off"
	noreserve_port=$(free_port)
	start_caddy caddy-noreserve $'\t\treservation_ttl off\n' "$noreserve_port" $'\trpm\n'
	listen+=("$last_admin_port" "$noreserve_port")
	if [[ $NORESERVE == 1 ]]; then
		noreserve_target=(-target "admitted-noreserve|127.0.0.1:$noreserve_port|/v1/models|$admitted_key|200")
	fi
fi
if ((EXACT_LIMIT > 0)); then
	echo "== third and fourth Caddy: the exact runs' second processes"
	admitted2_port=$(free_port)
	start_caddy caddy-2 "" "$admitted2_port" $'\trpm\n'
	listen+=("$last_admin_port" "$admitted2_port")
	noreserve2_port=$(free_port)
	start_caddy caddy-noreserve-2 $'\t\treservation_ttl off\n' "$noreserve2_port" $'\trpm\n'
	listen+=("$last_admin_port" "$noreserve2_port")
	exact_targets=(
		-exact "exact|127.0.0.1:$admitted_port,127.0.0.1:$admitted2_port|/v1/models|${exact_key[0]}|$EXACT_LIMIT|${exact_user[0]}"
		-exact "exact-noreserve|127.0.0.1:$noreserve_port,127.0.0.1:$noreserve2_port|/v1/models|${exact_key[1]}|$EXACT_LIMIT|${exact_user[1]}"
		-exact-duration "$EXACT_DURATION"
	)
fi
# The users scenarios each from a Caddy of its own, with the same site as
# the admitted one: the L1 of 50,000 or 200,000 keys is part of what they
# cost (its GC above all), and not of what the scenarios of the first
# Caddy cost, plain included. Sharing one process, its GC cycles (lumpy,
# one every second or two) swung every scenario's segments by ±10 %.
# Each also has a Redis key prefix of its own, so its users' counters are
# in a bucket of their own (limiter/layout.go): the users scenario measures
# a bucket of its 50,000 users' counters, as 50,000 active users would
# make, not one that the passes over users-large's keys have filled with
# 200,000 more.
users_target=() users_pprof=()
users_caddy() { # scenario name, key prefix, n
	local port
	port=$(free_port)
	redis_prefix="bench-$1:" start_caddy "caddy-$1" "" "$port" $'\trpm\n'
	listen+=("$last_admin_port" "$port")
	users_target+=(-target "$1|127.0.0.1:$port|/v1/models|@range:$2:$3|200")
	users_pprof+=(-pprof-for "$1=http://127.0.0.1:$last_admin_port")
}
if ((USERS > 0)); then
	echo "== Caddy of the users scenario"
	users_caddy users sk-rpm-bench "$USERS"
fi
if ((USERS_LARGE > 0)); then
	echo "== Caddy of the users-large scenario"
	users_caddy users-large sk-rpm-benchL "$USERS_LARGE"
fi
for p in "${listen[@]}"; do wait_tcp 127.0.0.1 "$p" caddy; done

profile_args=()
if [[ -n $PROFILE ]]; then
	mkdir -p "$root/bench/out"
	profile_args=(-pprof "http://127.0.0.1:$admin_port" -pprof-dir "$root/bench/out" "${users_pprof[@]}")
fi

alternate_args=()
for name in $ALTERNATE; do
	case $name in
	users) ((USERS > 0)) || continue ;;
	users-large) ((USERS_LARGE > 0)) || continue ;;
	admitted-noreserve) ((NORESERVE > 0)) || continue ;;
	esac
	alternate_args+=(-alternate "$name")
done
((${#alternate_args[@]} == 0)) || alternate_args+=(-alternate-duration "$ALTERNATE_DURATION" -slice "$SLICE")

echo "== load ($(uptime))"
md="$work/run.md"
GOMAXPROCS=$LOADGEN_GOMAXPROCS "$work/loadgen" \
	-target "plain|127.0.0.1:$plain_port|/v1/models|$admitted_key|200" \
	-target "admitted|127.0.0.1:$admitted_port|/v1/models|$admitted_key|200" \
	"${noreserve_target[@]}" \
	-target "capped|127.0.0.1:$admitted_port|/v1/models|$capped_key|200" \
	-target "refused|127.0.0.1:$refused_port|/v1/models|$refused_key|429" \
	-target "unknown|127.0.0.1:$admitted_port|/v1/models|@random|401" \
	"${users_target[@]}" "${exact_targets[@]}" \
	-connections "$CONNECTIONS" -latency-connections "$LATENCY_CONNECTIONS" -latency-duration "$LATENCY_DURATION" -warmup "$WARMUP" -duration "$DURATION" -rounds "$ROUNDS" \
	-redis "127.0.0.1:$redis_port" "${caddy_args[@]}" \
	-pg "$DATABASE_URL" -schema "$schema" -md "$md" "${profile_args[@]}" "${alternate_args[@]}" \
	-pid "redis=$redis_pid" -pid "upstream=$upstream_pid" -pid "loadgen=self" \
	-note "machine: $NPROC cores (nproc), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1); $(go version | cut -d' ' -f3); $(redis-server --version | cut -d' ' -f3); $(psql "$DATABASE_URL" -qAtc 'show server_version' | cut -d' ' -f1 | sed 's/^/postgres /')" \
	-note "GOMAXPROCS: caddy $CADDY_GOMAXPROCS, load generator $LOADGEN_GOMAXPROCS, upstream $UPSTREAM_GOMAXPROCS (redis-server is single-threaded); all share the same $NPROC cores" \
	-note "Caddy ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- . ':!bench/results.md' ':!bench/results.json' 2>/dev/null || echo '+dirty')) with three sites on 127.0.0.1: plain reverse_proxy, rpm admitted (user 10^9, group 10^9), rpm refused (user limit 1); the capped scenario sends a key of a user with concurrency 10^6 (limits 10^9) to the admitted site; the unknown scenario sends random well-formed keys to the admitted site; the users scenario $USERS keys of $USERS users and users-large $USERS_LARGE keys of as many other users (limits 10^9), uniformly at random, each to the same site in a Caddy of its own (0: no such scenario); admitted-noreserve (NORESERVE=$NORESERVE) the admitted key to a second Caddy with reservation_ttl off; exact runs (EXACT_LIMIT=$EXACT_LIMIT, 0: none): the first Caddy with a third, the second with a fourth; CPU and metrics of caddy are those of all Caddy processes; same upstream (bench/upstream, $UPSTREAM_HEADERS extra response headers); private redis-server; Postgres schema $schema ($([[ $BENCH_DB == private ]] && echo "in a throwaway database of the same name" || echo "in the shared database"))" \
	>"$work/run.json" &
# In the background and waited for, so that a TERM to this script runs the
# cleanup at once (bash defers traps until a foreground command ends).
pids+=($!)
wait $!

{
	if [[ -n ${RESULTS_APPEND:-} && -s $RESULTS ]]; then
		echo
	else
		echo "# caddy-rpm benchmark results"
		echo
		echo "Produced by \`make bench\` / \`bench/run.sh\`; see the comment at the top of bench/run.sh."
		echo
	fi
	echo "Command: \`$command_line\` (wall time up to the report: ${SECONDS} s, builds included)"
	echo
	cat "$md"
} >>"$RESULTS.tmp.$$"
if [[ -n ${RESULTS_APPEND:-} && -s $RESULTS ]]; then
	cat "$RESULTS.tmp.$$" >>"$RESULTS"
	rm -f "$RESULTS.tmp.$$"
else
	mv "$RESULTS.tmp.$$" "$RESULTS"
fi
cp "$work/run.json" "${RESULTS%.md}.json"
echo "== written to $RESULTS"
