package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

type run struct {
	code           int
	stdout, stderr string
}

func cache(t *testing.T, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(context.Background(), args, &out, &errb)
	t.Logf("cache %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return run{code, out.String(), errb.String()}
}

// workspace makes a Go-like project with its module cache inside it.
func workspace(t *testing.T) (wd, folder string) {
	wd = t.TempDir()
	os.WriteFile(filepath.Join(wd, "go.mod"), []byte("module example.com/x\n"), 0o644)
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("dep v1\n"), 0o644)
	folder = filepath.Join(wd, ".cache", "go")
	os.MkdirAll(folder, 0o755)
	testtree.Make(t, folder)
	return wd, folder
}

func readResult(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("result %s: %v", name, err)
	}
	return string(b)
}

func TestFetchUploadFetch(t *testing.T) {
	wd, folder := workspace(t)
	src := "file://" + filepath.Join(t.TempDir(), "store") + "/go-{{hash}}"
	res := filepath.Join(t.TempDir(), "results")
	common := []string{"--workingdir", wd, "--folder", folder, "--results-dir", res}

	r := cache(t, append([]string{"fetch", "--source", src, "--restore-keys", "go-"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "cache miss") || readResult(t, res, "fetched") != "false" {
		t.Fatalf("first fetch should miss with exit 0: %+v", r)
	}
	want := testtree.Snapshot(t, folder)
	r = cache(t, append([]string{"upload", "--target", src}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "saved go-") {
		t.Fatalf("upload: %+v", r)
	}
	key := readResult(t, res, "key")

	os.RemoveAll(folder)
	r = cache(t, append([]string{"fetch", "--source", src, "--output", "json"}, common...)...)
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--output json printed %q: %v", r.stdout, err)
	}
	if r.code != 0 || out["fetched"] != true || out["restored"] != true || out["key"] != key || out["matched-key"] != key {
		t.Fatalf("second fetch should hit: %+v", out)
	}
	if readResult(t, res, "fetched") != "true" || readResult(t, res, "restored") != "true" || readResult(t, res, "matched-key") != key {
		t.Fatal("results files do not say hit")
	}
	testtree.Equal(t, want, testtree.Snapshot(t, folder, ".tekton-cache-state"))

	// The same key again: upload skips with one cheap check.
	r = cache(t, append([]string{"upload", "--target", src}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("upload of an existing key should skip: %+v", r)
	}
	// The fetch step said fetched=true: the upload step skips without asking the store.
	r = cache(t, append([]string{"upload", "--target", "file:///nonexistent/x/{{hash}}", "--fetched", "true"}, common...)...)
	if r.code != 0 || !strings.Contains(r.stderr, "upload skipped") {
		t.Fatalf("upload with --fetched true: %+v", r)
	}

	// A lock-file change: the exact key misses, the restore key hits.
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("dep v2\n"), 0o644)
	os.RemoveAll(folder)
	r = cache(t, append([]string{"fetch", "--source", src, "--restore-keys", "python-", "--restore-keys", "go-"}, common...)...)
	if r.code != 0 || readResult(t, res, "fetched") != "false" || readResult(t, res, "restored") != "true" || readResult(t, res, "matched-key") != key {
		t.Fatalf("fetch after a lock change should restore from the restore key: %+v", r)
	}
	if readResult(t, res, "key") == key {
		t.Fatal("the key did not change with go.sum")
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	wd, folder := workspace(t)
	dir := filepath.Join(t.TempDir(), "store")
	t.Setenv("CACHE_TARGET", "file://"+dir+"/go-{{hash}}")
	t.Setenv("CACHE_WORKINGDIR", wd)
	t.Setenv("CACHE_FOLDER", folder)
	t.Setenv("CACHE_PATTERN", "go.sum,{go.mod,nothing.x}")
	t.Setenv("CACHE_OUTPUT", "json")
	r := cache(t, "upload")
	if r.code != 0 || !strings.Contains(r.stdout, `"uploaded":true`) {
		t.Fatalf("upload from env: %+v", r)
	}
	if !strings.Contains(r.stderr, "from 2 file(s)") {
		t.Fatalf("CACHE_PATTERN with a brace list was split wrong: %s", r.stderr)
	}
	// A flag beats the environment.
	r = cache(t, "upload", "--output", "text", "--force")
	if r.code != 0 || strings.Contains(r.stdout, "{") {
		t.Fatalf("--output text did not override CACHE_OUTPUT: %+v", r)
	}
}

func TestStoreErrorsWarnAndExitZeroUnlessStrict(t *testing.T) {
	wd, folder := workspace(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	res := t.TempDir()
	for _, src := range []string{
		"file:///proc/self/no-such-dir/{{hash}}",
		fmt.Sprintf("oci://%s/repo:{{hash}}", dead),
	} {
		args := []string{"fetch", "--source", src, "--workingdir", wd, "--folder", folder, "--results-dir", res}
		r := cache(t, args...)
		if r.code != 0 || !strings.Contains(r.stderr, "warning: cache error") || readResult(t, res, "fetched") != "false" ||
			readResult(t, res, "status") != "error" || readResult(t, res, "error") == "" {
			t.Errorf("fetch from %s: want a warning, status error and exit 0: %+v", src, r)
		}
		if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 1 {
			t.Errorf("fetch from %s: warning spans %d lines", src, n+1)
		}
		r = cache(t, append(args, "--strict")...)
		if r.code != 1 {
			t.Errorf("fetch --strict from %s: exit %d, want 1", src, r.code)
		}
		r = cache(t, "upload", "--target", src, "--workingdir", wd, "--folder", folder)
		if r.code != 0 || !strings.Contains(r.stderr, "warning: upload failed") && !strings.Contains(r.stderr, "warning:") {
			t.Errorf("upload to %s: want a warning and exit 0: %+v", src, r)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"fetch", "--bogus"},
		{"fetch", "--source", "file:///tmp/x/k"}, // no --folder
		{"fetch", "--source", "file:///tmp/x/k", "--folder", "f", "--output", "yaml"},
		{"nope"},
	} {
		if r := cache(t, args...); r.code != 2 {
			t.Errorf("cache %v: exit %d, want 2", args, r.code)
		}
	}
}

func TestKeyCommand(t *testing.T) {
	wd, folder := workspace(t)
	os.WriteFile(filepath.Join(folder, "go.sum"), []byte("inside the cache: never counts"), 0o644)
	r := cache(t, "key", "--workingdir", wd, "--folder", folder, "--key", "go-{{hash}}")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	if r.code != 0 || !strings.HasPrefix(last, "go-") || strings.Contains(last, " ") {
		t.Fatalf("last line %q is not the key alone: %+v", last, r)
	}
	if !strings.Contains(r.stdout, "  go.sum\n") || !strings.Contains(r.stdout, "  go.mod\n") || strings.Contains(r.stdout, ".cache") {
		t.Fatalf("key lists the wrong files:\n%s", r.stdout)
	}
	// The same key as fetch and upload compute.
	res := t.TempDir()
	cache(t, "fetch", "--source", "file://"+t.TempDir()+"/go-{{hash}}", "--workingdir", wd, "--folder", folder, "--results-dir", res)
	if got := readResult(t, res, "key"); got != last {
		t.Fatalf("fetch computed %s, key printed %s", got, last)
	}
	r = cache(t, "key", "--workingdir", wd, "--pattern", "**/nothing.lock", "--folder", folder)
	if r.code == 0 || !strings.Contains(r.stderr, "nothing.lock") || !strings.Contains(r.stderr, wd) {
		t.Fatalf("a pattern that matches nothing: %+v", r)
	}
}

func TestUploadKeyFromFetchResult(t *testing.T) {
	wd, folder := workspace(t)
	store := "file://" + filepath.Join(t.TempDir(), "store")
	r := cache(t, "upload", "--target", store+"/{{hash}}", "--key", "fixed-key-1", "--workingdir", wd, "--folder", folder, "--output", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"key":"fixed-key-1"`) {
		t.Fatalf("upload with --key: %+v", r)
	}
	r = cache(t, "fetch", "--store", store, "--key", "fixed-key-1", "--folder", t.TempDir(), "--output", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"fetched":true`) {
		t.Fatalf("fetch with --store and --key: %+v", r)
	}
}

func TestVersion(t *testing.T) {
	if r := cache(t, "version"); r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Fatalf("version: %+v", r)
	}
}
