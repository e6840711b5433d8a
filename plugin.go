// Package rpm is the caddy-rpm plugin: importing it (as xcaddy does with
// --with github.com/caddyrpm/caddy-rpm) registers the rpm app, the
// http.handlers.rpm middleware, the admin.api.rpm admin routes and the
// `caddy rpm` command.
package rpm

import (
	_ "github.com/caddyrpm/caddy-rpm/admin"
	_ "github.com/caddyrpm/caddy-rpm/caddyrpm"
)
