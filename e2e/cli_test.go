package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
	"github.com/caddyrpm/caddy-rpm/limiter/redistest"
	"github.com/caddyrpm/caddy-rpm/store/storetest"
)

// cliStatus runs `caddy rpm status --user <uid> --adminurl <addr>` with
// extra arguments and environment, and returns stdout, stderr and the error.
func cliStatus(t *testing.T, c *caddyInstance, uid int64, env []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"rpm", "status", "--user", testutil.Itoa(uid),
		"--adminurl", strings.TrimPrefix(c.AdminURL, "http://")}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestAdminAPICLIStatus checks `caddy rpm status` against a running
// instance: it prints the rpm-status JSON, and passes the admin token from
// the flag or the environment.
func TestAdminAPICLIStatus(t *testing.T) {
	e := admSetup(t)
	uid := storetest.SeedUser(t, e.pool, 20)
	gid := storetest.SeedGroup(t, e.pool, "cli-group", 10)
	_, key := storetest.SeedKey(t, e.pool, uid, &gid)
	token := "tok-" + randomID()
	c := e.start(t, "admin_token "+token)
	redistest.WaitForWindow(t, e.rdb, 15*time.Second)
	for range 3 {
		admExpect(t, c, key, 200, "")
	}

	for name, run := range map[string]func() (string, string, error){
		"flag": func() (string, string, error) { return cliStatus(t, c, uid, nil, "--admin-token", token) },
		"env": func() (string, string, error) {
			return cliStatus(t, c, uid, []string{"CADDY_RPM_ADMIN_TOKEN=" + token})
		},
	} {
		stdout, stderr, err := run()
		if err != nil {
			t.Fatalf("%s: rpm status: %v\nstdout: %s\nstderr: %s", name, err, stdout, stderr)
		}
		var st admStatus
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatalf("%s: stdout is not the status JSON: %v\n%s", name, err, stdout)
		}
		want := admGroupStatus{GroupID: gid, GroupName: "cli-group", Used: 3, Limit: 10, Source: "group"}
		if st.UserID != uid || st.UserRPMUsed != 3 || st.UserRPMLimit != 20 || len(st.PerGroup) != 1 || st.PerGroup[0] != want ||
			st.WindowResetsIn < 1 || st.WindowResetsIn > 60 {
			t.Fatalf("%s: status %+v", name, st)
		}
	}

	stdout, stderr, err := cliStatus(t, c, uid, nil)
	if err == nil || !strings.Contains(stderr, "401") {
		t.Fatalf("without the token: err %v, want a failure naming 401\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	stdout, stderr, err = cliStatus(t, c, 999999999, nil, "--admin-token", token)
	if err == nil || !strings.Contains(stderr, "404") {
		t.Fatalf("unknown user: err %v, want a failure naming 404\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
}
