package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyrpm/caddy-rpm/internal/testutil"
)

// quickstartCommand is the README's first command: build with xcaddy, run
// on the embedded default (keys file, in-process counters, demo upstream).
const quickstartCommand = "./xcaddy.sh && ./caddy run --config Caddyfile.example"

// TestQuickstart copies the repository's files (as a fresh clone would have
// them) to a temporary directory, runs the README's first command there and
// checks the demo key and a wrong key against the started gateway.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Caddy with xcaddy (1-2 minutes)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if readme, err := os.ReadFile(filepath.Join(root, "README.md")); err == nil {
		if got := quickstartFirstCommand(string(readme)); got != quickstartCommand {
			t.Fatalf("README's first sh command is %q, want %q", got, quickstartCommand)
		}
	} else {
		t.Logf("no README.md yet; running %q", quickstartCommand)
	}
	for _, port := range []string{"8080", "8081", "2019"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("port %s is taken; Caddyfile.example needs 8080, 8081 and 2019", port)
		}
	}

	dir := quickstartCopy(t, root)
	out := new(testutil.SyncBuffer)
	cmd := exec.Command("bash", "-c", quickstartCommand)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})

	// Wait for the build and the start: the admin endpoint answers once
	// Caddy runs the config.
	deadline := time.Now().Add(8 * time.Minute)
	for {
		select {
		case err := <-done:
			t.Fatalf("%q ended (%v) before the gateway answered:\n%s", quickstartCommand, err, out.String())
		default:
		}
		if resp, err := http.Get("http://127.0.0.1:8080/"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not up after 8 minutes:\n%s", out.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "caddy")); err != nil {
		t.Fatalf("./caddy was not built by xcaddy.sh: %v", err)
	}

	get := func(key string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8080/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	status, body, hdr := get("sk-demo-caddy-rpm-key")
	var demo map[string]any
	if status != 200 || json.Unmarshal([]byte(body), &demo) != nil || demo["upstream"] != "demo" {
		t.Fatalf("demo key: %d %s\n%s", status, body, out.String())
	}
	if demo["user_id"] != "1" || demo["group"] != "default" || demo["saw_authorization"] != "" {
		t.Fatalf("demo upstream saw %v", demo)
	}
	if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("demo content type %q", hdr.Get("Content-Type"))
	}
	status, body, hdr = get("sk-wrong-key")
	if status != 401 || !strings.Contains(body, `"code":"INVALID_API_KEY"`) || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("wrong key: %d %s", status, body)
	}
	if strings.Contains(out.String(), "sk-demo-caddy-rpm-key") {
		t.Fatalf("the demo key appears in Caddy's output")
	}
}

// quickstartFirstCommand returns the first command line of the first ```sh
// block of a README.
func quickstartFirstCommand(readme string) string {
	in := false
	for _, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && (trimmed == "```sh" || trimmed == "```bash" || trimmed == "```shell"):
			in = true
		case in && strings.HasPrefix(trimmed, "```"):
			return ""
		case in && trimmed != "" && !strings.HasPrefix(trimmed, "#"):
			return strings.TrimPrefix(trimmed, "$ ")
		}
	}
	return ""
}

// quickstartCopy copies the files git knows (tracked, and untracked but not
// ignored: what the next commit holds) into a temporary directory.
func quickstartCopy(t *testing.T, root string) string {
	t.Helper()
	list, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dir := t.TempDir()
	n := 0
	for _, name := range strings.Split(string(list), "\x00") {
		if name == "" {
			continue
		}
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the working tree, or not a file
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("git ls-files listed nothing")
	}
	// A binary committed by mistake must not stand in for the build.
	_ = os.Remove(filepath.Join(dir, "caddy"))
	t.Logf("copied %d files to %s", n, dir)
	return dir
}
