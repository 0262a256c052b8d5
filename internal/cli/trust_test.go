package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// storeFiles lists every file under a file:// store's directory.
func storeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestReadOnly: --read-only (and CACHE_READ_ONLY) skips the save with a
// log line and status skipped, writes nothing to the store, and leaves
// restore working.
func TestReadOnly(t *testing.T) {
	wd, folder := workspace(t)
	dir := filepath.Join(t.TempDir(), "store")
	src := "file://" + dir + "/go-{{hash}}"
	res := filepath.Join(t.TempDir(), "results")
	common := []string{"--workingdir", wd, "--folder", folder, "--results-dir", res}

	r := cache(t, append([]string{"upload", "--target", src, "--read-only"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "upload skipped: read-only") {
		t.Fatalf("read-only upload: want exit 0 and a skip line: %+v", r)
	}
	if got := readResult(t, res, "status"); got != "skipped" {
		t.Errorf("status = %q, want skipped", got)
	}
	if got := readResult(t, res, "uploaded"); got != "false" {
		t.Errorf("uploaded = %q, want false", got)
	}
	if !strings.HasPrefix(readResult(t, res, "key"), "go-") {
		t.Errorf("key result %q: want the key worked out", readResult(t, res, "key"))
	}
	if files := storeFiles(t, dir); len(files) != 0 {
		t.Fatalf("a read-only upload wrote to the store: %v", files)
	}

	// CACHE_READ_ONLY does the same; --read-only=false on the command
	// line wins over it.
	t.Setenv("CACHE_READ_ONLY", "true")
	r = cache(t, append([]string{"upload", "--target", src}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "upload skipped: read-only") || len(storeFiles(t, dir)) != 0 {
		t.Fatalf("CACHE_READ_ONLY=true upload: %+v, store %v", r, storeFiles(t, dir))
	}
	r = cache(t, append([]string{"upload", "--target", src, "--read-only=false"}, common...)...)
	if r.code != 0 || readResult(t, res, "status") != "saved" {
		t.Fatalf("--read-only=false upload should save: %+v", r)
	}
	before := storeFiles(t, dir)

	// Restore works in a read-only run and changes nothing in the store.
	want := testtree.Snapshot(t, folder, ".tekton-cache-state")
	os.RemoveAll(folder)
	r = cache(t, append([]string{"fetch", "--source", src}, common...)...)
	if r.code != 0 || readResult(t, res, "fetched") != "true" {
		t.Fatalf("fetch under CACHE_READ_ONLY: %+v", r)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, folder, ".tekton-cache-state"))
	r = cache(t, append([]string{"upload", "--target", src, "--force"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "upload skipped: read-only") {
		t.Fatalf("--force does not override read-only: %+v", r)
	}
	if after := storeFiles(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("store changed in read-only runs: %v -> %v", before, after)
	}
}

// TestMaxIndexEntries: CACHE_MAX_INDEX_ENTRIES below an entry's file count
// refuses the entry with a line naming the cap (a warning: the store's
// data, not the command, is at fault), and leaves the folder as it was;
// a cap that is not a positive number is a misconfiguration.
func TestMaxIndexEntries(t *testing.T) {
	wd, folder := workspace(t)
	src := "file://" + filepath.Join(t.TempDir(), "store") + "/go-{{hash}}"
	res := filepath.Join(t.TempDir(), "results")
	common := []string{"--workingdir", wd, "--folder", folder, "--results-dir", res}
	if r := cache(t, append([]string{"upload", "--target", src}, common...)...); r.code != 0 || readResult(t, res, "status") != "saved" {
		t.Fatalf("upload: %+v", r)
	}
	os.WriteFile(filepath.Join(folder, "local-only"), []byte("mine\n"), 0o644)
	before := testtree.Snapshot(t, folder)

	t.Setenv("CACHE_MAX_INDEX_ENTRIES", "3")
	r := cache(t, append([]string{"fetch", "--source", src}, common...)...)
	if r.code != 0 || readResult(t, res, "fetched") != "false" || !strings.Contains(r.stderr, "past the cap of 3 entries (CACHE_MAX_INDEX_ENTRIES") {
		t.Fatalf("fetch with a cap of 3 entries: want the entry refused with a line naming the cap: %+v", r)
	}
	testtree.Equal(t, before, testtree.Snapshot(t, folder))

	t.Setenv("CACHE_MAX_INDEX_ENTRIES", "0")
	if r := cache(t, append([]string{"fetch", "--source", src}, common...)...); r.code != 2 || !strings.Contains(r.stderr, "--max-index-entries 0") {
		t.Fatalf("a cap of 0: want exit 2 naming the flag: %+v", r)
	}
	t.Setenv("CACHE_MAX_INDEX_ENTRIES", "")
	if r := cache(t, append([]string{"fetch", "--source", src}, common...)...); r.code != 0 || readResult(t, res, "fetched") != "true" {
		t.Fatalf("fetch with the default cap: %+v", r)
	}
}
