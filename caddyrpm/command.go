package caddyrpm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/caddyrpm/caddy-rpm/store"
)

// Environment variables the rpm commands read when a flag is not given.
const (
	envDatabaseURL = "DATABASE_URL"
	envAdminToken  = "CADDY_RPM_ADMIN_TOKEN"
)

// cmdRPMStdout and cmdRPMStderr are where the rpm commands write; tests
// replace them.
var (
	cmdRPMStdout io.Writer = os.Stdout
	cmdRPMStderr io.Writer = os.Stderr
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "rpm",
		Short: "Manages the rpm plugin's database and reads RPM status",
		Long: `
Commands for the rpm plugin:

  caddy rpm migrate      applies the embedded Postgres migrations
  caddy rpm key create   creates an API key and prints it once
  caddy rpm status       prints a user's RPM status from the admin API

The database commands take --database-url, or DATABASE_URL from the
environment.
`,
		CobraFunc: func(cmd *cobra.Command) {
			migrate := &cobra.Command{
				Use:   "migrate [--database-url <dsn>]",
				Short: "Applies the embedded database migrations",
				Long: `
Applies the migrations embedded in this binary to the database, in order and
in one transaction. Already applied migrations are skipped, so running it
again is safe; concurrent runs wait for each other.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdRPMMigrate),
			}
			migrate.Flags().String("database-url", "", "Postgres DSN (default $DATABASE_URL)")
			cmd.AddCommand(migrate)

			key := &cobra.Command{
				Use:   "key",
				Short: "Manages API keys",
			}
			create := &cobra.Command{
				Use:   "create --user <id> [--group <id>] [--name <name>] [--database-url <dsn>]",
				Short: "Creates an API key and prints it once",
				Long: `
Generates a random API key for the user, stores only its SHA-256 hash and a
short display prefix, and prints the raw key on stdout. The key cannot be
shown again; store it safely.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdRPMKeyCreate),
			}
			create.Flags().String("database-url", "", "Postgres DSN (default $DATABASE_URL)")
			create.Flags().Int64("user", 0, "Id of the user who owns the key (required)")
			create.Flags().Int64("group", 0, "Id of the key's group (default: none)")
			create.Flags().String("name", "", "A name for the key")
			key.AddCommand(create)
			cmd.AddCommand(key)

			status := &cobra.Command{
				Use:   "status --user <id> [--adminurl <addr>] [--admin-token <token>]",
				Short: "Prints a user's RPM status",
				Long: `
Reads GET /admin/users/<id>/rpm-status from the admin API of a running Caddy
and pretty-prints the JSON. If the rpm app has an admin_token, pass it with
--admin-token or CADDY_RPM_ADMIN_TOKEN.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdRPMStatus),
			}
			status.Flags().Int64("user", 0, "User id (required)")
			status.Flags().String("adminurl", "", "The address of Caddy's admin API")
			status.Flags().StringP("config", "c", "", "Configuration file to read the admin address from")
			status.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			status.Flags().String("admin-token", "", "Bearer token of the rpm admin routes (default $CADDY_RPM_ADMIN_TOKEN)")
			cmd.AddCommand(status)
		},
	})
}

// cmdRPMID returns the value of a required id flag.
func cmdRPMID(fl caddycmd.Flags, name string) (int64, error) {
	if !fl.Changed(name) {
		return 0, fmt.Errorf("--%s is required", name)
	}
	return fl.GetInt64(name)
}

// cmdRPMPool opens a pool on the --database-url flag or DATABASE_URL.
func cmdRPMPool(ctx context.Context, fl caddycmd.Flags) (*pgxpool.Pool, error) {
	dsn := fl.String("database-url")
	if dsn == "" {
		dsn = os.Getenv(envDatabaseURL)
	}
	if dsn == "" {
		return nil, fmt.Errorf("no database: give --database-url or set %s", envDatabaseURL)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return pool, nil
}

func cmdRPMMigrate(fl caddycmd.Flags) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pool, err := cmdRPMPool(ctx, fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Fprintln(cmdRPMStderr, "migrations applied")
	return caddy.ExitCodeSuccess, nil
}

func cmdRPMKeyCreate(fl caddycmd.Flags) (int, error) {
	userID, err := cmdRPMID(fl, "user")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	var groupID *int64
	if fl.Changed("group") {
		g, err := fl.GetInt64("group")
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		groupID = &g
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := cmdRPMPool(ctx, fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer pool.Close()
	id, key, err := store.NewPostgres(pool).CreateKey(ctx, store.NewAPIKey{
		UserID:  userID,
		GroupID: groupID,
		Name:    fl.String("name"),
	})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Fprintf(cmdRPMStderr, "created api key %d (%s…) for user %d; it is shown only once:\n", id, key.Prefix, userID)
	fmt.Fprintln(cmdRPMStdout, key.Raw)
	return caddy.ExitCodeSuccess, nil
}

func cmdRPMStatus(fl caddycmd.Flags) (int, error) {
	userID, err := cmdRPMID(fl, "user")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("adminurl"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("admin address: %w", err)
	}
	token := fl.String("admin-token")
	if token == "" {
		token = os.Getenv(envAdminToken)
	}
	var headers http.Header
	if token != "" {
		headers = http.Header{"Authorization": {"Bearer " + token}}
	}
	resp, err := caddycmd.AdminAPIRequest(addr, http.MethodGet,
		"/admin/users/"+strconv.FormatInt(userID, 10)+"/rpm-status", headers, nil)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("read response: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(body), "", "  "); err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("admin API answered with invalid JSON: %w", err)
	}
	out.WriteByte('\n')
	if _, err := out.WriteTo(cmdRPMStdout); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return caddy.ExitCodeSuccess, nil
}
