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

// TestScopes: --scope prefixes keys and restore keys with SCOPE_; a pull
// request's run (--scope pr-7 --fallback-scope main) restores main's entry
// and saves in its own scope; main's runs never restore a pull request's
// entry, even one with the exact files and the newest, nor one whose scope
// name tries to look like main's.
func TestScopes(t *testing.T) {
	wd, folder := workspace(t)
	dir := filepath.Join(t.TempDir(), "store")
	store := "file://" + dir
	res := filepath.Join(t.TempDir(), "results")
	do := func(args ...string) run {
		t.Helper()
		return cache(t, append(args, "--store", store, "--workingdir", wd, "--folder", folder, "--results-dir", res)...)
	}
	want := func(r run, result, value string) {
		t.Helper()
		if got := readResult(t, res, result); got != value {
			t.Fatalf("%s = %q, want %q: %+v", result, got, value, r)
		}
	}
	setSum := func(s string) { os.WriteFile(filepath.Join(wd, "go.sum"), []byte(s), 0o644) }

	// main saves.
	r := do("upload", "--key", "go-{{hash}}", "--scope", "main")
	want(r, "status", "saved")
	mainKey := readResult(t, res, "key")
	if !strings.HasPrefix(mainKey, "main_go-") {
		t.Fatalf("main's key %q: want main_go-<hash>", mainKey)
	}

	// A pull request changes go.sum: it restores main's entry, then saves
	// under its own scope (the key from fetch is not scoped twice).
	setSum("dep v2\n")
	r = do("fetch", "--key", "go-{{hash}}", "--restore-keys", "go-", "--scope", "pr-7", "--fallback-scope", "main")
	want(r, "status", "fallback")
	want(r, "matched-key", mainKey)
	prKey := readResult(t, res, "key")
	if !strings.HasPrefix(prKey, "pr-7_go-") {
		t.Fatalf("the PR's key %q: want pr-7_go-<hash>", prKey)
	}
	r = do("upload", "--key", prKey, "--scope", "pr-7", "--force")
	want(r, "status", "saved")
	want(r, "key", prKey)
	// Its own scope first: the next PR run hits its own entry.
	r = do("fetch", "--key", "go-{{hash}}", "--restore-keys", "go-", "--scope", "pr-7", "--fallback-scope", "main")
	want(r, "status", "hit")
	want(r, "matched-key", prKey)

	// A scope named to pass for main's prefix is mapped ("main_go" is
	// "main-go") and stays apart.
	r = do("upload", "--key", "go-{{hash}}", "--scope", "main_go", "--force")
	want(r, "status", "saved")
	if k := readResult(t, res, "key"); !strings.HasPrefix(k, "main-go_") {
		t.Fatalf("scope main_go gave key %q, want main-go_...", k)
	}

	// main with the PR's go.sum: the PR's entries (the exact files, and
	// newer) are never restored; main's older entry is.
	r = do("fetch", "--key", "go-{{hash}}", "--restore-keys", "go-", "--scope", "main")
	want(r, "status", "fallback")
	want(r, "matched-key", mainKey)

	// The key command shows the scoped key.
	if r := cache(t, "key", "--key", "go-{{hash}}", "--scope", "pr-7", "--workingdir", wd); r.code != 0 || !strings.HasSuffix(strings.TrimSpace(r.stdout), prKey) {
		t.Fatalf("cache key --scope pr-7: want %s last: %+v", prKey, r)
	}
	// Misconfigurations exit 2.
	for _, args := range [][]string{
		{"fetch", "--key", "go-{{hash}}", "--fallback-scope", "main"},
		{"fetch", "--key", "go-{{hash}}", "--scope", "-x"},
		{"upload", "--key", "go-{{hash}}", "--scope", strings.Repeat("s", 65)},
	} {
		if r := do(args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2: %+v", args, r.code, r)
		}
	}
}
