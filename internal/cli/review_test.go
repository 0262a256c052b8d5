package cli

// One test per reproduction of the UX review (../shared/REVIEW-ux.md, D1-D10)
// that the command line can show.

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func jsonLine(t *testing.T, r run) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--output json printed %q: %v", r.stdout, err)
	}
	return out
}

func fileStore(t *testing.T) string { return "file://" + filepath.Join(t.TempDir(), "store") }

// TestD1MisconfigurationIsExit2 is D1: every misconfiguration printed one
// "warning: cache miss" line and exited 0, with the results of a miss.
func TestD1MisconfigurationIsExit2(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no store", nil, nil, "no store"},
		{"malformed URL", nil, []string{"--source", "s3:/ci-cache/go-{{hash}}"}, "no bucket"},
		{"unknown scheme", nil, []string{"--source", "foo://x/go-{{hash}}"}, `unknown scheme "foo"`},
		{"no scheme", nil, []string{"--source", "/mnt/cache/go-{{hash}}"}, "file:///mnt/cache/go-{{hash}}"},
		{"working dir", nil, []string{"--source", s + "/go-{{hash}}", "--workingdir", "/nonexistent"}, "/nonexistent is not a directory"},
		{"working dir, fixed key", nil, []string{"--store", s, "--key", "k1", "--workingdir", "/nonexistent"}, "/nonexistent is not a directory"},
		{"bad boolean", map[string]string{"CACHE_INSECURE": "yes"}, []string{"--source", s + "/go-{{hash}}"}, `CACHE_INSECURE="yes" is not a boolean`},
		{"bad key", nil, []string{"--store", s, "--key", "go {{hash}}"}, "invalid cache key"},
		{"bad restore key", nil, []string{"--source", s + "/go-{{hash}}", "--restore-keys", ".go"}, "--restore-keys"},
		{"bad pattern", nil, []string{"--source", s + "/go-{{hash}}", "--pattern", "go[.sum"}, "invalid pattern"},
		{"no match", nil, []string{"--source", s + "/go-{{hash}}", "--pattern", "**/nothing.lock"}, "no file matches"},
		{"unknown placeholder", nil, []string{"--source", s + "/go-{{branch}}"}, "{{branch}}"},
	} {
		for _, cmd := range []string{"fetch", "upload"} {
			for _, strict := range []bool{false, true} {
				for k, v := range tc.env {
					t.Setenv(k, v)
				}
				res := t.TempDir()
				args := append([]string{cmd, "--folder", folder, "--results-dir", res}, tc.args...)
				if !contains(tc.args, "--workingdir") {
					args = append(args, "--workingdir", wd)
				}
				if cmd == "upload" {
					for i, a := range args {
						if a == "--source" {
							args[i] = "--target"
						}
					}
				}
				if strict {
					args = append(args, "--strict")
				}
				r := cache(t, args...)
				lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
				last := lines[len(lines)-1]
				if r.code != 2 || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, tc.want) {
					t.Errorf("%s %s (strict %v): exit %d, last line %q; want exit 2 and an error with %q", cmd, tc.name, strict, r.code, last, tc.want)
				}
				if tc.name != "bad boolean" { // flags are parsed before any result is written
					if st := readResult(t, res, "status"); st != "error" || readResult(t, res, "error") == "" {
						t.Errorf("%s %s: results status=%q error=%q", cmd, tc.name, st, readResult(t, res, "error"))
					}
				}
				for k := range tc.env {
					os.Unsetenv(k)
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestD2ReferenceForms is D2: the reference tool's S3/GCS key form
// (BUCKET/cache-go:{{hash}}) was an invalid key, and "--insecure false" an
// unknown command.
func TestD2ReferenceForms(t *testing.T) {
	wd, folder := workspace(t)
	src := fileStore(t) + "/cache-go:{{hash}}"
	res := t.TempDir()
	common := []string{"--pattern", "**go.sum", "--folder", folder, "--workingdir", wd, "--insecure", "false", "--results-dir", res}
	r := cache(t, append([]string{"upload", "--target", src}, common...)...)
	key := readResult(t, res, "key")
	if r.code != 0 || !strings.HasPrefix(key, "cache-go-") || !strings.Contains(r.stderr, `using "`+key+`"`) {
		t.Fatalf("upload with the reference's key form: %+v (key %q)", r, key)
	}
	os.RemoveAll(folder)
	r = cache(t, append([]string{"fetch", "--source", src, "--restore-keys", "cache-go:"}, common...)...)
	if r.code != 0 || readResult(t, res, "status") != "hit" || readResult(t, res, "matched-key") != key {
		t.Fatalf("fetch with the reference's key form: %+v", r)
	}
	// A URI where a flag was meant: a line that says which flag.
	r = cache(t, "fetch", "oci://reg.example/repo:tag", "--folder", folder)
	if r.code != 2 || !strings.Contains(r.stderr, "--source oci://reg.example/repo:tag") {
		t.Fatalf("positional URI: %+v", r)
	}
	r = cache(t, "fetch", "--folder", folder, "--quiet", "maybe")
	if r.code != 2 || !strings.Contains(r.stderr, `unexpected argument "maybe"`) {
		t.Fatalf("stray argument: %+v", r)
	}
	// The reference's patterns, via `cache key`.
	base := filepath.Base(wd)
	os.MkdirAll(filepath.Join(wd, "sub"), 0o755)
	os.WriteFile(filepath.Join(wd, "sub", "go.sum"), []byte("sub\n"), 0o644)
	for _, tc := range []struct {
		patterns []string
		want     []string
		not      []string
	}{
		{[]string{"**/" + base + "/go.sum"}, []string{"  go.sum\n"}, []string{"sub/go.sum"}},
		{[]string{"**go.sum"}, []string{"  go.sum\n", "  sub/go.sum\n"}, nil},
		{[]string{"**/go.sum", "!sub/**"}, []string{"  go.sum\n"}, []string{"sub/go.sum"}},
	} {
		args := []string{"key", "--workingdir", wd, "--folder", folder}
		for _, p := range tc.patterns {
			args = append(args, "--pattern", p)
		}
		r := cache(t, args...)
		for _, w := range tc.want {
			if r.code != 0 || !strings.Contains(r.stdout, w) {
				t.Errorf("%q: want %q in\n%s", tc.patterns, w, r.stdout)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(r.stdout, n) {
				t.Errorf("%q: %q should not match:\n%s", tc.patterns, n, r.stdout)
			}
		}
	}
}

// TestD3DamagedEntryHeals is D3: a pack deleted from the store made every
// fetch of the key a miss (restore keys not tried) and every upload skip.
func TestD3DamagedEntryHeals(t *testing.T) {
	wd, folder := workspace(t)
	dir := filepath.Join(t.TempDir(), "store")
	s := "file://" + dir
	res := t.TempDir()
	common := []string{"--workingdir", wd, "--folder", folder, "--results-dir", res}
	if r := cache(t, append([]string{"upload", "--store", s, "--key", "go-old"}, common...)...); r.code != 0 {
		t.Fatal(r)
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(filepath.Join(folder, "new.txt"), []byte("new content, its own pack"), 0o644)
	if r := cache(t, append([]string{"upload", "--store", s, "--key", "go-new"}, common...)...); r.code != 0 {
		t.Fatal(r)
	}
	// Delete the pack only go-new has (a lifecycle rule, a registry GC).
	var ref struct {
		Packs []struct{ Digest string }
	}
	data, err := os.ReadFile(filepath.Join(dir, "v1", "refs", "go-new"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(data, &ref)
	old, _ := os.ReadFile(filepath.Join(dir, "v1", "refs", "go-old"))
	deleted := false
	for _, p := range ref.Packs {
		hex := strings.TrimPrefix(p.Digest, "sha256:")
		if !strings.Contains(string(old), hex) {
			if err := os.Remove(filepath.Join(dir, "v1", "blobs", "sha256", hex)); err != nil {
				t.Fatal(err)
			}
			deleted = true
		}
	}
	if !deleted {
		t.Fatal("no pack of go-new alone")
	}
	ws2 := filepath.Join(t.TempDir(), "cache")
	r := cache(t, "fetch", "--store", s, "--key", "go-new", "--restore-keys", "go-", "--workingdir", wd, "--folder", ws2, "--results-dir", res)
	if r.code != 0 || readResult(t, res, "status") != "fallback" || readResult(t, res, "matched-key") != "go-old" ||
		!strings.Contains(r.stderr, "entry go-new is damaged") {
		t.Fatalf("fetch of a damaged entry should fall back to go-old: %+v", r)
	}
	r = cache(t, append([]string{"upload", "--store", s, "--key", "go-new"}, common...)...)
	if r.code != 0 || readResult(t, res, "status") != "saved" || !strings.Contains(readResult(t, res, "replaced"), "is missing") {
		t.Fatalf("upload over a damaged entry should replace it without --force: %+v", r)
	}
	r = cache(t, "fetch", "--store", s, "--key", "go-new", "--workingdir", wd, "--folder", filepath.Join(t.TempDir(), "c"), "--results-dir", res)
	if readResult(t, res, "status") != "hit" {
		t.Fatalf("the replaced entry does not hit: %+v", r)
	}
}

// TestD4FoldersByName is D4: swapping two folders wrote folder A's content
// into folder B, and adding a folder made every upload skip.
func TestD4FoldersByName(t *testing.T) {
	wd := t.TempDir()
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("x\n"), 0o644)
	for _, d := range []string{"cache", "other"} {
		os.MkdirAll(filepath.Join(wd, d), 0o755)
		os.WriteFile(filepath.Join(wd, d, d+".txt"), []byte(d), 0o644)
	}
	s := fileStore(t)
	res := t.TempDir()
	if r := cache(t, "upload", "--store", s, "--key", "two", "--workingdir", wd, "--folder", filepath.Join(wd, "cache"), "--folder", filepath.Join(wd, "other")); r.code != 0 {
		t.Fatal(r)
	}
	ws3 := t.TempDir()
	r := cache(t, "fetch", "--store", s, "--key", "two", "--workingdir", ws3, "--folder", filepath.Join(ws3, "other")+","+filepath.Join(ws3, "cache"), "--results-dir", res)
	if r.code != 0 || readResult(t, res, "status") != "hit" {
		t.Fatalf("swapped fetch: %+v", r)
	}
	for _, d := range []string{"cache", "other"} {
		if got, _ := os.ReadFile(filepath.Join(ws3, d, d+".txt")); string(got) != d {
			t.Errorf("%s/%s.txt = %q: a folder's content landed elsewhere", d, d, got)
		}
	}
	// One folder saved, then two: the upload replaces instead of skipping.
	if r := cache(t, "upload", "--store", s, "--key", "one", "--workingdir", wd, "--folder", filepath.Join(wd, "cache")); r.code != 0 {
		t.Fatal(r)
	}
	r = cache(t, "upload", "--store", s, "--key", "one", "--workingdir", wd, "--folder", filepath.Join(wd, "cache"), "--folder", filepath.Join(wd, "other"), "--results-dir", res)
	if readResult(t, res, "status") != "saved" || !strings.Contains(r.stderr, "replacing the entry under key one") {
		t.Fatalf("upload with a folder more: %+v", r)
	}
}

// TestD5OutcomesTellErrorsFromMisses is D5: an unreachable store gave the
// JSON of a miss, a failed upload that of a skipped one, seconds 0.
func TestD5OutcomesTellErrorsFromMisses(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	common := []string{"--workingdir", wd, "--folder", folder, "--output", "json"}
	check := func(r run, status string, wantErr bool) map[string]any {
		t.Helper()
		out := jsonLine(t, r)
		if out["status"] != status || (out["error"] != "") != wantErr {
			t.Errorf("status %v error %q, want %s (error: %v)", out["status"], out["error"], status, wantErr)
		}
		if sec, _ := out["seconds"].(float64); sec <= 0 {
			t.Errorf("seconds = %v", out["seconds"])
		}
		return out
	}
	out := check(cache(t, append([]string{"fetch", "--source", s + "/none-{{hash}}"}, common...)...), "miss", false)
	if out["store"] != s || !strings.Contains(out["reason"].(string), "no usable entry") {
		t.Errorf("miss: %v", out)
	}
	check(cache(t, append([]string{"fetch", "--source", "oci://" + dead + "/cache:go-{{hash}}"}, common...)...), "error", true)
	check(cache(t, append([]string{"upload", "--target", "oci://" + dead + "/cache:go-{{hash}}"}, common...)...), "error", true)
	check(cache(t, append([]string{"upload", "--target", s + "/go-{{hash}}"}, common...)...), "saved", false)
	check(cache(t, append([]string{"upload", "--target", s + "/go-{{hash}}"}, common...)...), "skipped", false)
	out = check(cache(t, append([]string{"fetch", "--source", s + "/go-{{hash}}"}, common...)...), "hit", false)
	if out["platform"] == "" || out["created"] == "" {
		t.Errorf("hit without the entry's platform and age: %v", out)
	}
	// Secrets never reach the results.
	out = jsonLine(t, cache(t, append([]string{"fetch", "--source", s + "/go-{{hash}}?sig=hunter2"}, common...)...))
	if strings.Contains(out["store"].(string), "hunter2") {
		t.Errorf("store result leaks a secret: %v", out["store"])
	}
}

// TestD6TimeoutIsNamedAndTimed is D6: a stalled store was silence until the
// timeout, which read as a miss, without the limit, with seconds=0.000.
func TestD6TimeoutIsNamedAndTimed(t *testing.T) {
	wd, folder := workspace(t)
	l, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	res := t.TempDir()
	defer func(d time.Duration) { waitInterval = d }(waitInterval)
	waitInterval = 300 * time.Millisecond
	r := cache(t, "fetch", "--source", "oci://"+l.Addr().String()+"/cache:go-{{hash}}", "--insecure", "--timeout", "1s", "--workingdir", wd, "--folder", folder, "--results-dir", res)
	if r.code != 0 || !strings.Contains(r.stderr, "gave up after 1s (--timeout") {
		t.Fatalf("timeout: %+v", r)
	}
	if !strings.Contains(r.stderr, "still waiting for oci://"+l.Addr().String()+"/cache") {
		t.Errorf("a silent store is silence: %s", r.stderr)
	}
	if !strings.Contains(readResult(t, res, "error"), "gave up after 1s (--timeout") {
		t.Errorf("the error result does not name the limit: %q", readResult(t, res, "error"))
	}
	// The idle limit gives up on a silent store long before --timeout.
	start := time.Now()
	r = cache(t, "fetch", "--source", "oci://"+l.Addr().String()+"/cache:go-{{hash}}", "--insecure", "--idle-timeout", "1s", "--workingdir", wd, "--folder", folder, "--results-dir", res)
	if r.code != 0 || !strings.Contains(r.stderr, "nothing for 1s (--idle-timeout)") || time.Since(start) > 10*time.Second {
		t.Fatalf("idle timeout after %s: %+v", time.Since(start), r)
	}
	if sec, _ := strconv.ParseFloat(readResult(t, res, "seconds"), 64); sec < 1 {
		t.Fatalf("seconds = %v after a 1s timeout", sec)
	}
}

// TestD7CommaListsOnTheCommandLine is D7: on the command line a comma list
// was one invalid key, and a "/" in a restore key cancelled the exact hit.
func TestD7CommaListsOnTheCommandLine(t *testing.T) {
	wd, folder := workspace(t)
	src := fileStore(t) + "/go-{{hash}}"
	if r := cache(t, "upload", "--target", src, "--workingdir", wd, "--folder", folder); r.code != 0 {
		t.Fatal(r)
	}
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("changed\n"), 0o644)
	res := t.TempDir()
	for _, rk := range []string{"nope-,go-", "feature/x-,go-"} {
		r := cache(t, "fetch", "--source", src, "--restore-keys", rk, "--workingdir", wd, "--folder", filepath.Join(t.TempDir(), "c"), "--results-dir", res)
		if r.code != 0 || readResult(t, res, "status") != "fallback" || readResult(t, res, "restore-key") != "go-" {
			t.Errorf("--restore-keys %q: %+v", rk, r)
		}
	}
	// A folder whose name has a comma stays one folder.
	comma := filepath.Join(t.TempDir(), "a,b")
	os.MkdirAll(comma, 0o755)
	os.WriteFile(filepath.Join(comma, "f"), []byte("x"), 0o644)
	r := cache(t, "upload", "--store", fileStore(t), "--key", "k", "--folder", comma, "--output", "json")
	if out := jsonLine(t, r); out["status"] != "saved" || out["files"].(float64) != 1 {
		t.Errorf("folder with a comma: %v", out)
	}
}

// TestD8BranchScopedPrefixes is D8: branch names could not be prefixes ('/'
// refused), so a PR's entry was what main restored. With the branch in the
// key (mapped to a valid key), each branch falls back to its own entries.
func TestD8BranchScopedPrefixes(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	os.WriteFile(filepath.Join(folder, "dep.txt"), []byte("good"), 0o644)
	cache(t, "upload", "--store", s, "--key", "main/go-{{hash}}", "--workingdir", wd, "--folder", folder)
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("pr v2\n"), 0o644)
	os.WriteFile(filepath.Join(folder, "dep.txt"), []byte("evil"), 0o644)
	cache(t, "upload", "--store", s, "--key", "pr-42/go-{{hash}}", "--workingdir", wd, "--folder", folder)
	os.WriteFile(filepath.Join(wd, "go.sum"), []byte("main v3\n"), 0o644)
	dst := filepath.Join(t.TempDir(), "cache")
	res := t.TempDir()
	r := cache(t, "fetch", "--store", s, "--key", "main/go-{{hash}}", "--restore-keys", "main/go-", "--workingdir", wd, "--folder", dst, "--results-dir", res)
	if got, _ := os.ReadFile(filepath.Join(dst, "dep.txt")); r.code != 0 || string(got) != "good" || readResult(t, res, "status") != "fallback" {
		t.Fatalf("main restored %q: %+v", got, r)
	}
}

// TestD9LogLines is D9: a fallback logged as "cache hit", a false "base
// pack is gone" line per pack when the state came from another store, and
// counts that did not add up (empty files).
func TestD9LogLines(t *testing.T) {
	wd, folder := workspace(t)
	a, b := fileStore(t), fileStore(t)
	cache(t, "upload", "--store", a, "--key", "go-1", "--workingdir", wd, "--folder", folder)
	dst := filepath.Join(t.TempDir(), "cache")
	r := cache(t, "fetch", "--store", a, "--key", "go-2", "--restore-keys", "go-", "--workingdir", wd, "--folder", dst)
	if strings.Contains(r.stderr, "cache hit") || !strings.Contains(r.stderr, "cache fallback: restored go-1") {
		t.Errorf("a fallback is not logged as a fallback: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "1 empty") {
		t.Errorf("the empty file is not counted: %s", r.stderr)
	}
	// The folder's state names store a; saving to store b reads every file
	// without claiming a's packs are "gone" from b.
	r = cache(t, "upload", "--store", b, "--key", "go-2", "--workingdir", wd, "--folder", dst)
	if r.code != 0 || strings.Contains(r.stderr, "is gone") {
		t.Errorf("save to another store: %s", r.stderr)
	}
}

func TestVersionFlagKeyJSONLookupAndFailOnMiss(t *testing.T) {
	if r := cache(t, "--version"); r.code != 0 || strings.TrimSpace(r.stdout) == "" {
		t.Errorf("--version: %+v", r)
	}
	wd, folder := workspace(t)
	out := jsonLine(t, cache(t, "key", "--workingdir", wd, "--folder", folder, "--key", "go-{{os}}-{{hash}}", "--output", "json"))
	if k, _ := out["key"].(string); !strings.HasPrefix(k, "go-linux-") && !strings.HasPrefix(k, "go-darwin-") || len(out["files"].([]any)) != 2 {
		t.Errorf("key --output json: %v", out)
	}
	src := fileStore(t) + "/go-{{hash}}"
	res := t.TempDir()
	// fail-on-miss: a miss is exit 1, a store error is not.
	if r := cache(t, "fetch", "--source", src, "--workingdir", wd, "--folder", folder, "--fail-on-miss"); r.code != 1 {
		t.Errorf("--fail-on-miss on a miss: exit %d", r.code)
	}
	if r := cache(t, "fetch", "--source", "file:///proc/self/nope/go-{{hash}}", "--workingdir", wd, "--folder", folder, "--fail-on-miss"); r.code != 0 {
		t.Errorf("--fail-on-miss on a store error: exit %d", r.code)
	}
	cache(t, "upload", "--target", src, "--workingdir", wd, "--folder", folder)
	empty := filepath.Join(t.TempDir(), "c")
	r := cache(t, "fetch", "--source", src, "--workingdir", wd, "--folder", empty, "--lookup-only", "--results-dir", res)
	if r.code != 0 || readResult(t, res, "status") != "hit" || readResult(t, res, "fetched") != "true" || readResult(t, res, "restored") != "false" {
		t.Errorf("--lookup-only: %+v", r)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("--lookup-only created %s", empty)
	}
}

// TestD10ListAndDelete is D10: `cache list` and `cache delete` were unknown
// commands; nothing showed what a store holds.
func TestD10ListAndDelete(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	for _, k := range []string{"go-1", "go-2", "npm-1"} {
		if r := cache(t, "upload", "--store", s, "--key", k, "--workingdir", wd, "--folder", folder, "--force"); r.code != 0 {
			t.Fatal(r)
		}
	}
	r := cache(t, "list", "--store", s, "--prefix", "go-")
	if r.code != 0 || !strings.Contains(r.stdout, "go-1") || !strings.Contains(r.stdout, "go-2") || strings.Contains(r.stdout, "npm-1") || !strings.Contains(r.stdout, "/") {
		t.Fatalf("list: %+v", r)
	}
	out := jsonLine(t, cache(t, "ls", "--store", s, "--output", "json"))
	list := out["entries"].([]any)
	if len(list) != 3 || list[0].(map[string]any)["key"] != "npm-1" || list[0].(map[string]any)["folders"].([]any)[0] != ".cache/go" {
		t.Fatalf("ls --output json: %v", out)
	}
	if r := cache(t, "delete", "--store", s, "--prefix", "go-", "--older-than", "1h", "--dry-run"); r.code != 0 || strings.Contains(r.stdout, "go-") {
		t.Fatalf("nothing is an hour old: %+v", r)
	}
	if r := cache(t, "rm", "--store", s, "--prefix", "go-", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would delete go-1") {
		t.Fatalf("dry run: %+v", r)
	}
	if r := cache(t, "delete", "--store", s, "--key", "go-1"); r.code != 0 || !strings.Contains(r.stdout, "deleted go-1") {
		t.Fatalf("delete: %+v", r)
	}
	res := t.TempDir()
	cache(t, "fetch", "--store", s, "--key", "go-1", "--folder", filepath.Join(t.TempDir(), "c"), "--results-dir", res)
	if readResult(t, res, "status") != "miss" {
		t.Fatal("the deleted entry still restores")
	}
	if r := cache(t, "delete", "--store", s); r.code != 2 {
		t.Fatalf("delete without a selection: exit %d", r.code)
	}
}
