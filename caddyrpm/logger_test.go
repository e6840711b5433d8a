package caddyrpm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// TestSharedLoggerFollowsTheDefaultLog: a shared logger made under one
// configuration writes to the default log of the configuration running
// when it writes, not to the one of its creation, with its name and
// fields.
func TestSharedLoggerFollowsTheDefaultLog(t *testing.T) {
	dir := t.TempDir()
	load := func(file string) {
		t.Helper()
		cfg := `{"admin": {"disabled": true}, "logging": {"logs": {"default": {
			"writer": {"output": "file", "filename": "` + filepath.Join(dir, file) + `"},
			"encoder": {"format": "json"}}}}}`
		if err := caddy.Load([]byte(cfg), true); err != nil {
			t.Fatalf("load config: %v", err)
		}
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	load("first.log")
	log := sharedLogger("rpm.test").With(zap.String("field", "kept"))
	log.Warn("under the first config")
	load("second.log")
	log.Warn("under the second config")

	read := func(file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	first, second := read("first.log"), read("second.log")
	if !strings.Contains(first, "under the first config") || strings.Contains(first, "under the second config") {
		t.Errorf("first log:\n%s", first)
	}
	if !strings.Contains(second, "under the second config") || strings.Contains(second, "under the first config") {
		t.Errorf("second log:\n%s", second)
	}
	for _, want := range []string{`"logger":"rpm.test"`, `"field":"kept"`} {
		if !strings.Contains(second, want) {
			t.Errorf("second log lacks %s:\n%s", want, second)
		}
	}
}
