#!/usr/bin/env bash
# Builds ./caddy: Caddy v2.11.9 with the standard modules and this plugin,
# using xcaddy v0.4.5 (installed into $(go env GOPATH)/bin when missing).
set -euo pipefail
cd "$(dirname "$0")"

XCADDY_VERSION=v0.4.5
CADDY_VERSION=v2.11.9

xcaddy="$(go env GOPATH)/bin/xcaddy"
if ! "$xcaddy" version 2>/dev/null | grep -q "${XCADDY_VERSION#v}"; then
	go install "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}"
fi

XCADDY_SKIP_CLEANUP=0 "$xcaddy" build "$CADDY_VERSION" \
	--output ./caddy \
	--with github.com/caddyrpm/caddy-rpm@v0.0.0=.
./caddy list-modules | grep -E '^(rpm|http\.handlers\.rpm|admin\.api\.rpm)$'
