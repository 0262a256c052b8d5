package cli

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// The reproductions of issue 10 through the command line: equal path, size,
// mtime and mode do not prove equal content, in either direction.

// npmEpoch is the mtime npm pack writes into every entry.
var npmEpoch = time.Date(1985, 10, 26, 8, 15, 0, 0, time.UTC)

// npmFolder writes a small node_modules-like tree whose pkg/index.js holds
// index, with every mtime pinned to npmEpoch.
func npmFolder(t *testing.T, dir, index string) {
	t.Helper()
	for p, data := range map[string]string{
		"pkg/index.js":     index,
		"pkg/package.json": `{"name":"pkg","version":"1.0.0"}` + "\n",
		"other/lib.js":     "module.exports = 42;\n",
	} {
		p = filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testtree.Touch(t, dir, npmEpoch)
}

// replaceKeepingMTime gives p new content (of the same size, the caller's
// business) and puts its mtime back, as tar -x, cp -p or rsync -a do. With
// rename, the new content arrives in a new inode (tar -x, cp -p to a temp
// name); else the file is rewritten in place.
func replaceKeepingMTime(t *testing.T, p, data string, rename bool) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != int(fi.Size()) {
		t.Fatalf("test bug: %d bytes to replace %d", len(data), fi.Size())
	}
	dst := p
	if rename {
		dst = p + ".new"
	}
	if err := os.WriteFile(dst, []byte(data), fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if rename {
		if err := os.Rename(dst, p); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUploadForcePublishesReplacedContent is the first reproduction: restore
// an entry into nm/, replace nm/pkg/index.js with new content of the same
// size and the old mtime, upload --force: a restore of the new entry into an
// empty folder must give the new bytes (today it gives the old ones, and the
// log says the file was unchanged).
func TestUploadForcePublishesReplacedContent(t *testing.T) {
	const v1, v2 = "console.log('v1');\n", "console.log('v2');\n"
	for _, rename := range []bool{false, true} {
		name := "rewritten in place"
		if rename {
			name = "replaced by rename"
		}
		t.Run(name, func(t *testing.T) {
			store := "file://" + filepath.Join(t.TempDir(), "store")
			src := filepath.Join(t.TempDir(), "nm")
			npmFolder(t, src, v1)
			if r := cache(t, "upload", "--store", store, "--key", "npm-1", "--folder", src, "--strict"); r.code != 0 {
				t.Fatalf("first upload: %+v", r)
			}
			nm := filepath.Join(t.TempDir(), "nm")
			res := t.TempDir()
			if r := cache(t, "fetch", "--store", store, "--key", "npm-1", "--folder", nm, "--results-dir", res, "--strict"); r.code != 0 || readResult(t, res, "fetched") != "true" {
				t.Fatalf("fetch into nm/: %+v", r)
			}
			replaceKeepingMTime(t, filepath.Join(nm, "pkg", "index.js"), v2, rename)
			want := testtree.Snapshot(t, nm, ".tekton-cache-state")
			if r := cache(t, "upload", "--store", store, "--key", "npm-1", "--folder", nm, "--force", "--strict"); r.code != 0 {
				t.Fatalf("upload --force: %+v", r)
			}
			fresh := filepath.Join(t.TempDir(), "nm")
			r := cache(t, "fetch", "--store", store, "--key", "npm-1", "--folder", fresh, "--results-dir", res, "--strict")
			if r.code != 0 || readResult(t, res, "fetched") != "true" || readResult(t, res, "restored") != "true" {
				t.Fatalf("fetch of the new entry should be an exact hit: %+v", r)
			}
			if got := mustRead(t, filepath.Join(fresh, "pkg", "index.js")); got != v2 {
				t.Fatalf("upload --force published %q for pkg/index.js, the disk held %q", got, v2)
			}
			testtree.Equal(t, want, testtree.Snapshot(t, fresh, ".tekton-cache-state"))
		})
	}
}

// TestWarmRestoreReplacesForeignContent is the second reproduction: restore
// entry A into out/, then entry B (same paths, sizes, mtimes and modes,
// other bytes) into the same out/: out/ must hold B. The same over a file no
// restore wrote, and by a restore key. Each is still a hit.
func TestWarmRestoreReplacesForeignContent(t *testing.T) {
	const a, b, mine = "AAAAAAAAAAAAAAAA\n", "BBBBBBBBBBBBBBBB\n", "CCCCCCCCCCCCCCCC\n"
	store := "file://" + filepath.Join(t.TempDir(), "store")
	srcA, srcB := filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "out")
	npmFolder(t, srcA, a)
	npmFolder(t, srcB, b)
	wantB := testtree.Snapshot(t, srcB)
	for key, src := range map[string]string{"entry-a": srcA, "entry-b": srcB} {
		if r := cache(t, "upload", "--store", store, "--key", key, "--folder", src, "--strict"); r.code != 0 {
			t.Fatalf("upload %s: %+v", key, r)
		}
	}
	res := t.TempDir()
	fetch := func(t *testing.T, dir string, keyArgs ...string) {
		t.Helper()
		args := append([]string{"fetch", "--store", store, "--folder", dir, "--results-dir", res, "--strict"}, keyArgs...)
		if r := cache(t, args...); r.code != 0 || readResult(t, res, "restored") != "true" {
			t.Fatalf("fetch %v should hit: %+v", keyArgs, r)
		}
	}
	check := func(t *testing.T, dir string) {
		t.Helper()
		if got := mustRead(t, filepath.Join(dir, "pkg", "index.js")); got != b {
			t.Fatalf("after restoring entry-b, pkg/index.js holds %q, want %q", got, b)
		}
		testtree.Equal(t, wantB, testtree.Snapshot(t, dir, ".tekton-cache-state"))
	}

	t.Run("over another entry", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		fetch(t, out, "--key", "entry-a")
		fetch(t, out, "--key", "entry-b")
		if readResult(t, res, "fetched") != "true" || readResult(t, res, "matched-key") != "entry-b" {
			t.Fatal("restoring entry-b by its key is not an exact hit")
		}
		check(t, out)
	})
	t.Run("over another entry by restore key", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		fetch(t, out, "--key", "entry-a")
		fetch(t, out, "--key", "nothing-here", "--restore-keys", "entry-b")
		if readResult(t, res, "fetched") != "false" || readResult(t, res, "matched-key") != "entry-b" {
			t.Fatal("restoring by restore key entry-b did not match entry-b")
		}
		check(t, out)
	})
	t.Run("over a file no restore wrote", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		npmFolder(t, out, mine)
		fetch(t, out, "--key", "entry-b")
		if readResult(t, res, "fetched") != "true" {
			t.Fatal("restoring entry-b by its key is not an exact hit")
		}
		check(t, out)
	})
}

// TestEmptyOrNestedFolderIsAUsageError: --folder "" (an unset variable)
// would save or restore the working directory; folders inside one another
// would be saved twice and restored over each other. Both exit 2.
func TestEmptyOrNestedFolderIsAUsageError(t *testing.T) {
	store := "file://" + filepath.Join(t.TempDir(), "store")
	// Today "" means the working directory: make it a scratch one, so that
	// the test cannot write into the source tree.
	cwd := t.TempDir()
	t.Chdir(cwd)
	npmFolder(t, filepath.Join(cwd, "a", "b"), "x\n")
	if r := cache(t, "upload", "--store", store, "--key", "one", "--folder", filepath.Join(cwd, "a"), "--strict"); r.code != 0 {
		t.Fatalf("upload: %+v", r)
	}
	if r := cache(t, "upload", "--store", store, "--key", "two", "--folder", filepath.Join(cwd, "a"), "--folder", filepath.Join(cwd, "x"), "--strict"); r.code != 0 {
		t.Fatalf("upload: %+v", r)
	}
	a, ab := filepath.Join(cwd, "a"), filepath.Join(cwd, "a", "b")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"upload --folder ''", []string{"upload", "--store", store, "--key", "empty", "--folder", ""}},
		{"fetch --folder ''", []string{"fetch", "--store", store, "--key", "one", "--folder", ""}},
		{"upload nested", []string{"upload", "--store", store, "--key", "nested", "--folder", a, "--folder", ab}},
		{"upload nested, inner first", []string{"upload", "--store", store, "--key", "nested", "--folder", ab, "--folder", a}},
		{"upload same twice", []string{"upload", "--store", store, "--key", "nested", "--folder", a, "--folder", a + "/"}},
		{"fetch nested", []string{"fetch", "--store", store, "--key", "two", "--folder", a, "--folder", ab}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cache(t, tc.args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2 (a misconfiguration): %+v", r.code, r)
			}
			if r.stderr == "" {
				t.Fatal("no error message")
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(cwd, ".tekton-cache-state")); err == nil {
		t.Error(`a --folder "" run wrote a restore state into the working directory`)
	}
}
