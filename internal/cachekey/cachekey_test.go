package cachekey

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func compute(t *testing.T, o Options) *Result {
	t.Helper()
	r, err := Compute(o)
	if err != nil {
		t.Fatalf("Compute: %v", err)
	}
	return r
}

// TestModuleCacheInsideWorkDirDoesNotChangeKey is the reference tool's most
// common miss: GOMODCACHE inside the workspace holds go.mod/go.sum files of
// every dependency, so a "**/go.sum" key computed after the build differs
// from the one computed before it.
func TestModuleCacheInsideWorkDirDoesNotChangeKey(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "go.mod", "module example.com/x\n")
	write(t, wd, "go.sum", "example.com/dep v1.0.0 h1:abc\n")
	write(t, wd, "sub/go.sum", "nested\n")
	modcache := filepath.Join(wd, ".cache", "gomod")
	o := Options{WorkDir: wd, Patterns: []string{"**/go.sum", "**/go.mod"}, Exclude: []string{modcache, filepath.Join(wd, ".cache", "gobuild")}}
	before := compute(t, o)

	// The build fills the module cache (inside the working dir) and .git changes.
	write(t, modcache, "example.com/dep@v1.0.0/go.mod", "module example.com/dep\n")
	write(t, modcache, "cache/download/example.com/dep/@v/v1.0.0.mod", "module example.com/dep\n")
	write(t, modcache, "example.com/dep@v1.0.0/go.sum", "x\n")
	write(t, wd, ".git/go.sum", "not a lock file\n")
	write(t, wd, "vendor-ish/.git/go.mod", "nested git\n")

	after := compute(t, o)
	if before.Hash != after.Hash {
		t.Fatalf("key drifted: %s before the build, %s after; files after: %v", before.Hash, after.Hash, after.Files)
	}
	var paths []string
	for _, f := range after.Files {
		paths = append(paths, f.Path)
	}
	if want := []string{"go.mod", "go.sum", "sub/go.sum"}; !reflect.DeepEqual(paths, want) {
		t.Fatalf("matched %v, want %v", paths, want)
	}
}

func TestHashCoversPathAndContent(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "a/go.sum", "one\n")
	o := Options{WorkDir: wd, Patterns: []string{"**/go.sum"}}
	h1 := compute(t, o).Hash
	if h2 := compute(t, o).Hash; h1 != h2 {
		t.Fatal("same tree, different hash")
	}
	write(t, wd, "a/go.sum", "two\n")
	h3 := compute(t, o).Hash
	if h3 == h1 {
		t.Fatal("content change did not change the hash")
	}
	os.Rename(filepath.Join(wd, "a"), filepath.Join(wd, "b"))
	if h4 := compute(t, o).Hash; h4 == h3 {
		t.Fatal("moving the file did not change the hash")
	}
}

// TestGoldenHash pins the hash of a fixed input: a change here changes
// every user's keys, so it must be deliberate.
func TestGoldenHash(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "go.sum", "golden\n")
	write(t, wd, "tools/go.sum", "tools\n")
	got := compute(t, Options{WorkDir: wd, Patterns: []string{"**/go.sum"}}).Hash
	const want = "1e20adf9ec08b8d035f47795b16cb3dd60cc88dbc4b253c444e6d8592c25534d"
	if got != want {
		t.Fatalf("golden hash = %s, want %s", got, want)
	}
}

func TestNoMatchNamesPatternsAndDir(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "README", "x")
	_, err := Compute(Options{WorkDir: wd, Patterns: []string{"**/go.sum", "yarn.lock"}})
	if !errors.Is(err, ErrNoMatch) {
		t.Fatalf("err = %v, want ErrNoMatch", err)
	}
	for _, want := range []string{`"**/go.sum"`, `"yarn.lock"`, wd} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestLiteralPatternAndOutsideRejected(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "requirements.txt", "flask\n")
	r := compute(t, Options{WorkDir: wd, Patterns: []string{"./requirements.txt"}})
	if len(r.Files) != 1 || r.Files[0].Path != "requirements.txt" {
		t.Fatalf("files = %v", r.Files)
	}
	if _, err := Compute(Options{WorkDir: wd, Patterns: []string{"../etc/passwd"}}); err == nil {
		t.Fatal("a pattern outside the working dir was accepted")
	}
	if _, err := Compute(Options{WorkDir: wd, Patterns: []string{"[bad"}}); err == nil {
		t.Fatal("an invalid pattern was accepted")
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		files []string
		want  []string
	}{
		{[]string{"go.mod", "go.sum"}, []string{"go"}},
		{[]string{"package.json", "package-lock.json"}, []string{"npm"}},
		{[]string{"yarn.lock"}, []string{"yarn"}},
		{[]string{"pnpm-lock.yaml"}, []string{"pnpm"}},
		{[]string{"poetry.lock", "pyproject.toml"}, []string{"poetry"}},
		{[]string{"uv.lock"}, []string{"uv"}},
		{[]string{"requirements.txt"}, []string{"pip"}},
		{[]string{"pom.xml"}, []string{"maven"}},
		{[]string{"build.gradle.kts"}, []string{"gradle"}},
		{[]string{"Gemfile.lock"}, []string{"ruby"}},
		{[]string{"composer.lock"}, []string{"php"}},
		{[]string{"Cargo.lock"}, []string{"rust"}},
		{[]string{"go.sum", "package-lock.json"}, []string{"go", "npm"}},
	} {
		wd := t.TempDir()
		for _, f := range tc.files {
			write(t, wd, f, f)
		}
		names, _ := Detect(wd)
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("Detect(%v) = %v, want %v", tc.files, names, tc.want)
		}
		r := compute(t, Options{WorkDir: wd})
		if len(r.Files) == 0 || !reflect.DeepEqual(r.Detected, tc.want) {
			t.Errorf("Compute without patterns on %v: detected %v, files %v", tc.files, r.Detected, r.Files)
		}
	}
	_, err := Compute(Options{WorkDir: t.TempDir()})
	if !errors.Is(err, ErrNoPattern) {
		t.Fatalf("no lock file and no pattern: err = %v, want ErrNoPattern", err)
	}
	// The message lists every lock file Detect looks for.
	for _, e := range ecosystems {
		for _, m := range e.markers {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("no lock file and no pattern: %q does not name %s", err, m)
			}
		}
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("no lock file and no pattern: %q names a flag (the CLI words it)", err)
	}
}

func TestWorkDirNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	write(t, filepath.Dir(f), "file", "x")
	for _, wd := range []string{f, filepath.Join(t.TempDir(), "missing")} {
		_, err := Compute(Options{WorkDir: wd, Patterns: []string{"go.sum"}})
		if !errors.Is(err, ErrNotDir) || !strings.Contains(err.Error(), wd+" is not a directory") {
			t.Errorf("Compute(WorkDir %s) = %v, want ErrNotDir naming it", wd, err)
		}
	}
}

func TestCachedFolderIsWorkDir(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "go.sum", "x")
	if _, err := Compute(Options{WorkDir: wd, Patterns: []string{"go.sum"}, Exclude: []string{wd}}); err == nil {
		t.Fatal("caching the working dir itself was accepted")
	}
}
