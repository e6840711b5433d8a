package caddyrpm

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/pflag"

	"github.com/caddyrpm/caddy-rpm/store"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// cmdFlags builds the flags of an rpm subcommand from name/value pairs.
func cmdFlags(t *testing.T, defs func(*pflag.FlagSet), args ...string) caddycmd.Flags {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	defs(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return caddycmd.Flags{FlagSet: fs}
}

func captureOutput(t *testing.T) (stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = new(bytes.Buffer), new(bytes.Buffer)
	oldOut, oldErr := cmdRPMStdout, cmdRPMStderr
	cmdRPMStdout, cmdRPMStderr = stdout, stderr
	t.Cleanup(func() { cmdRPMStdout, cmdRPMStderr = oldOut, oldErr })
	return stdout, stderr
}

func dbFlags(fs *pflag.FlagSet) {
	fs.String("database-url", "", "")
	fs.Int64("user", 0, "")
	fs.Int64("group", 0, "")
	fs.String("name", "", "")
}

func TestCommandMigrateAndKeyCreate(t *testing.T) {
	pool, dsn := storetest.NewSchema(t)
	ctx := context.Background()
	stdout, _ := captureOutput(t)

	if _, err := cmdRPMMigrate(cmdFlags(t, dbFlags, "--database-url", dsn)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Setenv(envDatabaseURL, dsn)
	if _, err := cmdRPMMigrate(cmdFlags(t, dbFlags)); err != nil {
		t.Fatalf("migrate with DATABASE_URL: %v", err)
	}

	uid := storetest.SeedUser(t, pool, 10)
	gid := storetest.SeedGroup(t, pool, "g", 5)
	if _, err := cmdRPMKeyCreate(cmdFlags(t, dbFlags, "--user", strconv.FormatInt(uid, 10), "--group", strconv.FormatInt(gid, 10), "--name", "cli")); err != nil {
		t.Fatalf("key create: %v", err)
	}
	raw := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(raw, store.APIKeyPrefix) {
		t.Fatalf("printed key %q", raw)
	}
	s, err := store.NewPostgres(pool).LoadSnapshot(ctx, store.HashKey(raw))
	if err != nil {
		t.Fatalf("load the created key: %v", err)
	}
	if s.UserID != uid || s.GroupID == nil || *s.GroupID != gid {
		t.Fatalf("created key snapshot: %+v", s)
	}

	if _, err := cmdRPMKeyCreate(cmdFlags(t, dbFlags)); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Fatalf("key create without --user: %v", err)
	}
	if _, err := cmdRPMKeyCreate(cmdFlags(t, dbFlags, "--user", "999999")); err == nil {
		t.Fatal("key create for an unknown user: no error")
	}
	t.Setenv(envDatabaseURL, "")
	if _, err := cmdRPMMigrate(cmdFlags(t, dbFlags)); err == nil || !strings.Contains(err.Error(), envDatabaseURL) {
		t.Fatalf("migrate without a database: %v", err)
	}
}

func TestCommandStatus(t *testing.T) {
	var gotAuth, gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"user_id": 7, "user_rpm_limit": 60})
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	defs := func(fs *pflag.FlagSet) {
		fs.Int64("user", 0, "")
		fs.String("adminurl", "", "")
		fs.String("config", "", "")
		fs.String("adapter", "", "")
		fs.String("admin-token", "", "")
	}
	stdout, _ := captureOutput(t)

	t.Setenv(envAdminToken, "from-env")
	if _, err := cmdRPMStatus(cmdFlags(t, defs, "--user", "7", "--adminurl", addr)); err != nil {
		t.Fatal(err)
	}
	if gotPath != "/admin/users/7/rpm-status" || gotAuth != "Bearer from-env" {
		t.Fatalf("request: path %q, authorization %q", gotPath, gotAuth)
	}
	if want := "{\n  \"user_id\": 7,\n  \"user_rpm_limit\": 60\n}\n"; stdout.String() != want {
		t.Fatalf("output %q, want %q", stdout.String(), want)
	}
	if _, err := cmdRPMStatus(cmdFlags(t, defs, "--user", "7", "--adminurl", addr, "--admin-token", "flag")); err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer flag" {
		t.Fatalf("authorization %q, want the flag's token", gotAuth)
	}
	if _, err := cmdRPMStatus(cmdFlags(t, defs, "--adminurl", addr)); err == nil {
		t.Fatal("status without --user: no error")
	}
}
