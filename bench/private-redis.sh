# bench/private-redis.sh, sourced by the bench scripts that measure Redis
# alone: starts a private redis-server on a free port of 127.0.0.1, with
# nothing on disk, sets port to it, defines cli (redis-cli on that port)
# and shuts the server down when the script exits.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis_dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" --daemonize yes \
	--pidfile "$redis_dir/redis.pid" >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

cli() { redis-cli -p "$port" "$@"; }
