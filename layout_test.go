package rpm

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/caddyrpm/caddy-rpm/"

// productionImports maps each package directory of the module to what its
// non-test files import.
func productionImports(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[dir] = append(out[dir], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLayout checks the architecture the README's Layout section shows:
// only the Caddy adapters (and cmd/caddy) import Caddy, caddyrpm and admin
// do not import each other, and admin reaches the store, the limiter and
// the snapshots only through the gateway.
func TestLayout(t *testing.T) {
	imports := productionImports(t)
	if len(imports["gateway"]) == 0 || len(imports["admin"]) == 0 {
		t.Fatalf("package directories not found: %v", imports)
	}
	caddyAllowed := []string{"caddyrpm", "admin", "cmd/caddy"}
	for dir, imps := range imports {
		for _, p := range imps {
			if strings.HasPrefix(p, "github.com/caddyserver/") && !slices.Contains(caddyAllowed, dir) {
				t.Errorf("%s imports %s; only %v may import Caddy", dir, p, caddyAllowed)
			}
		}
	}
	forbidden := map[string][]string{
		"caddyrpm": {"admin"},
		"admin":    {"caddyrpm", "store", "limiter", "snapshot"},
		"gateway":  {"caddyrpm", "admin"},
	}
	for dir, banned := range forbidden {
		for _, p := range imports[dir] {
			if rest, ok := strings.CutPrefix(p, module); ok && slices.Contains(banned, rest) {
				t.Errorf("%s imports %s", dir, p)
			}
		}
	}
}
