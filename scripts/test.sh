#!/usr/bin/env bash
# The test command: makes sure Postgres, Redis and Chromium are installed
# and running, then runs go vet and the race-enabled test suite, which
# includes end-to-end tests through a real Caddy binary. Arguments go to
# go test (after ./...).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v chromium >/dev/null || need_apt+=(chromium)
if ((${#need_apt[@]})); then
	echo "installing ${need_apt[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
	echo "starting redis"
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

pg_ok() { psql -h 127.0.0.1 -U root -d test -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
	version=$(ls /etc/postgresql | sort -V | tail -1)
	if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
		echo "starting postgres $version"
		pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
		for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break; sleep 0.1; done
	fi
	if ! pg_ok; then
		# A fresh install: create the root role and test database, and trust
		# loopback connections as the test machines do.
		echo "configuring postgres for local tests"
		su postgres -c "psql -qc \"do \\\$\\\$ begin create role root superuser login; exception when duplicate_object then null; end \\\$\\\$\"" || true
		su postgres -c "createdb -O root test" 2>/dev/null || true
		hba="/etc/postgresql/$version/main/pg_hba.conf"
		if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
			sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
			pg_ctlcluster --skip-systemctl-redirect "$version" main reload
		fi
	fi
	pg_ok || { echo "postgres is not usable at 127.0.0.1:5432 as root/test" >&2; exit 1; }
fi

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi
go vet ./...
staticcheck="$(go env GOPATH)/bin/staticcheck"
[[ -x $staticcheck ]] || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
"$staticcheck" ./...

go test -race -count=1 -timeout 45m ./... "$@"
