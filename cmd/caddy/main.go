// Command caddy is Caddy with the standard modules and caddy-rpm, the same
// build xcaddy makes; tests and benchmarks use it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddyrpm/caddy-rpm"
)

func main() {
	caddycmd.Main()
}
