package caddyrpm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestAdminTokenJSON: a token that resolves to nothing is a load error
// naming the option, never "no token"; admin_token_file is read and
// trimmed, and is exclusive with admin_token.
func TestAdminTokenJSON(t *testing.T) {
	t.Setenv("RPM_TEST_EMPTY_TOKEN", "")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeTestFile(t, tokenFile, "  file-s3cret\n")
	emptyFile := filepath.Join(dir, "empty")
	writeTestFile(t, emptyFile, " \n\t\n")
	bigFile := filepath.Join(dir, "big")
	writeTestFile(t, bigFile, strings.Repeat("x", maxAdminTokenFile+1))

	for name, tc := range map[string]struct {
		app  App
		want string // error substring; "" = no error
		tok  string
	}{
		"unset variable":     {App{AdminAuthToken: "{env.RPM_TEST_SURELY_UNSET_VAR}"}, "admin_token", ""},
		"empty variable":     {App{AdminAuthToken: "{env.RPM_TEST_EMPTY_TOKEN}"}, "admin_token", ""},
		"white space around": {App{AdminAuthToken: " tok"}, "admin_token must not begin or end with white space", ""},
		"literal":            {App{AdminAuthToken: "tok"}, "", "tok"},
		"none":               {App{}, "", ""},
		"file":               {App{AdminTokenFile: tokenFile}, "", "file-s3cret"},
		"file placeholder":   {App{AdminTokenFile: "{env.RPM_TEST_TOKEN_DIR}/token"}, "", "file-s3cret"},
		"empty file":         {App{AdminTokenFile: emptyFile}, "admin_token_file: " + emptyFile + " is empty", ""},
		"big file":           {App{AdminTokenFile: bigFile}, "admin_token_file: " + bigFile + " is larger", ""},
		"missing file":       {App{AdminTokenFile: filepath.Join(dir, "nope")}, "admin_token_file: open", ""},
		"unset file path":    {App{AdminTokenFile: "{env.RPM_TEST_SURELY_UNSET_VAR}"}, "admin_token_file: the path resolves to an empty string", ""},
		"both":               {App{AdminAuthToken: "tok", AdminTokenFile: tokenFile}, "admin_token and admin_token_file are exclusive", ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("RPM_TEST_TOKEN_DIR", dir)
			a := tc.app
			a.KeysFile = "k.json"
			configured := a.AdminAuthToken
			err := a.setDefaults()
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				if a.AdminToken() != "" {
					t.Fatalf("token %q set despite the error", a.AdminToken())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.AdminToken() != tc.tok {
				t.Fatalf("token %q, want %q", a.AdminToken(), tc.tok)
			}
			if a.AdminAuthToken != configured {
				t.Errorf("admin_token rewritten to %q; the config keeps what was configured", a.AdminAuthToken)
			}
		})
	}
}

// TestAdminTokenCaddyfile: admin_token_file adapts to its JSON field;
// an empty value and the two options together are errors naming the line.
func TestAdminTokenCaddyfile(t *testing.T) {
	cfg, err := cfAdapt(t, "{\n\trpm {\n\t\tkeys_file k.json\n\t\tadmin_token_file /run/secrets/rpm\n\t}\n}\n:8080 {\n\trespond ok\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"keys_file": "k.json", "admin_token_file": "/run/secrets/rpm"}
	if got := cfg["apps"].(map[string]any)["rpm"]; !reflect.DeepEqual(got, want) {
		t.Errorf("rpm app %v, want %v", got, want)
	}

	global := func(body string) string {
		return "{\n\trpm {\n\t\tkeys_file k.json\n" + body + "\n\t}\n}\n:8080 {\n\trespond ok\n}\n"
	}
	for name, tc := range map[string]struct{ src, want, line string }{
		"empty token":      {global("\t\tadmin_token \"\""), "'admin_token' must not be empty", "Caddyfile:4"},
		"empty file":       {global("\t\tadmin_token_file \"\""), "'admin_token_file' must not be empty", "Caddyfile:4"},
		"token then file":  {global("\t\tadmin_token t\n\t\tadmin_token_file f"), "exclusive", "Caddyfile:5"},
		"file then token":  {global("\t\tadmin_token_file f\n\t\tadmin_token t"), "exclusive", "Caddyfile:5"},
		"file without arg": {global("\t\tadmin_token_file"), "admin_token_file", "Caddyfile:4"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cfAdapt(t, tc.src)
			if err == nil {
				t.Fatal("adapted without error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.line) {
				t.Errorf("error %q, want one containing %q and %s", err, tc.want, tc.line)
			}
		})
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
