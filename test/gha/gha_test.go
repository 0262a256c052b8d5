// Package gha drives real GitHub Actions cache clients against a real
// cache-serve (built from this tree, started on 127.0.0.1): @actions/cache
// from npm under node (installed by hack/install-node-tools.sh), for both
// versions of the protocol.
package gha

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/testenv"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// binDir holds cache and cache-serve, built from this tree by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gha-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := 1
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func build(dir string) error {
	for _, pkg := range []string{"cache", "cache-serve"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), "github.com/tekton-cache/tekton-cache/cmd/"+pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/%s: %v\n%s", pkg, err, out)
		}
	}
	return nil
}

// Static tokens of the tokens file: main's pipelines write main; pull
// requests read [pr, main] and write pr (docs/HTTP.md).
const (
	mainToken = "gha-test-main-token"
	prToken   = "gha-test-pr-token"
)

// server is a running cache-serve over a directory store.
type server struct {
	URL   string // http://127.0.0.1:PORT/, with the slash the v1 clients need
	Store string // the store's directory
	proc  *testserver.Process
}

func startServer(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	tokens := fmt.Sprintf(`tokens:
  - name: main-pipelines
    sha256: %s
    write: main
  - name: pull-requests
    sha256: %s
    write: pr
    read: [pr, main]
`, sha(mainToken), sha(prToken))
	tf := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tf, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	p := testserver.Start(t, filepath.Join(binDir, "cache-serve"),
		[]string{"--listen", addr, "--store", "file://" + store, "--tokens-file", tf}, nil)
	p.WaitHTTP(t, "http://"+addr+"/healthz", 200)
	return &server{URL: "http://" + addr + "/", Store: store, proc: p}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// runtimeToken exchanges a static token for a runtime token with the step
// image's own command, `cache serve token`, as a Task's step does.
func (s *server) runtimeToken(t *testing.T, credential string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(credential), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "cache"), "serve", "token", "--server", s.URL, "--token-file", f)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cache serve token: %v\nstderr: %s\nserver:\n%s", err, stderr.String(), s.proc.Output())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	tok := strings.TrimSpace(lines[len(lines)-1])
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("cache serve token printed %q on its last line, not a JWT", tok)
	}
	if strings.Contains(stderr.String(), tok) || strings.Contains(stderr.String(), credential) {
		t.Fatalf("cache serve token wrote a token on stderr: %s", stderr.String())
	}
	return tok
}

// peersDir is where hack/install-node-tools.sh puts @actions/cache.
func peersDir(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		testenv.SkipUnless(t, false, "node is not installed: the @actions/cache test needs Node.js 20")
	}
	var dirs []string
	if d := os.Getenv("CACHE_TOOLS_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, filepath.Join(wd, "..", "..", ".tools"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "gha-peers")
		if _, err := os.Stat(filepath.Join(p, "node_modules", "@actions", "cache", "package.json")); err == nil {
			return p
		}
	}
	testenv.SkipUnless(t, false, "@actions/cache is not installed: run `make tools` (hack/install-node-tools.sh)")
	return ""
}

// client is @actions/cache run by actions-cache.mjs with one protocol
// version and one runtime token.
type client struct {
	t   *testing.T
	env []string
}

func newClient(t *testing.T, s *server, version int, token string) *client {
	t.Helper()
	temp := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + temp,
		"RUNNER_TEMP=" + temp,
		"GITHUB_WORKSPACE=" + temp,
		"ACTIONS_RUNTIME_TOKEN=" + token,
		"RUNNER_DEBUG=1", // ::debug:: lines: which calls were made
	}
	switch version {
	case 1:
		env = append(env, "ACTIONS_CACHE_URL="+s.URL)
	case 2:
		env = append(env, "ACTIONS_CACHE_SERVICE_V2=true", "ACTIONS_RESULTS_URL="+s.URL)
	}
	return &client{t: t, env: append(env, "GHA_PEERS_DIR="+peersDir(t))}
}

// run runs the driver and returns its JSON answer and its log.
func (c *client) run(answer any, args ...string) string {
	c.t.Helper()
	cmd := exec.Command("node", append([]string{"actions-cache.mjs"}, args...)...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	log := out.String()
	if err != nil {
		c.t.Fatalf("node actions-cache.mjs %s: %v\n%s", strings.Join(args, " "), err, log)
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), answer); err != nil {
		c.t.Fatalf("node actions-cache.mjs %s: last line is not its answer: %v\n%s", strings.Join(args, " "), err, log)
	}
	return log
}

// save saves paths under key and fails unless the client says it did.
// A v1 save that fails after its reserve still returns the id, so the log
// is checked too: the package warns, it does not throw.
func (c *client) save(key string, paths ...string) (int64, string) {
	c.t.Helper()
	var a struct{ CacheID int64 }
	log := c.run(&a, append([]string{"save", key}, paths...)...)
	return a.CacheID, log
}

// restore restores paths from the first of keys that hits; "" is a miss.
func (c *client) restore(keys []string, paths ...string) (string, string) {
	c.t.Helper()
	var a struct{ MatchedKey *string }
	log := c.run(&a, append([]string{"restore", strings.Join(keys, ",")}, paths...)...)
	if strings.Contains(log, "Failed to restore") {
		c.t.Fatalf("restore %v failed:\n%s", keys, log)
	}
	if a.MatchedKey == nil {
		return "", log
	}
	return *a.MatchedKey, log
}

func mustSave(t *testing.T, c *client, key string, paths ...string) string {
	t.Helper()
	id, log := c.save(key, paths...)
	if id <= 0 || strings.Contains(log, "Failed to save") || strings.Contains(log, "::error::") {
		t.Fatalf("save %s: cacheId %d\n%s", key, id, log)
	}
	return log
}

// tree is what a restore must give back: per path, mode, size and sha256.
type tree map[string]string

func snapshot(t *testing.T, dir string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", n, h.Sum(nil))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (want tree) check(t *testing.T, dir, what string) {
	t.Helper()
	got := snapshot(t, dir)
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s missing", what, p)
		} else if g != w {
			t.Errorf("%s: %s is %s, want %s", what, p, g, w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s should not be there", what, p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// makeTree writes a directory whose archive is over size bytes however
// it is compressed: one file of ChaCha8 output (zstd cannot shrink it)
// and a few small files and a symlink.
func makeTree(t *testing.T, dir string, seed uint64, size int64) {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'g', 'h', 'a'})
	for _, d := range []string{"pkg/a", "pkg/b"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range []string{"pkg/a/small.txt", "pkg/b/tiny", "top.json"} {
		data := fmt.Sprintf("seed %d file %d %s\n", seed, i, strings.Repeat("x", i*100))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a/small.txt", filepath.Join(dir, "pkg", "link")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "pkg", "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// bigSize puts the archive over @actions/cache's single-shot limit for
// version 2 (128 MiB: larger archives go up as Put Block + Put Block List,
// 64 MiB blocks) and over four of version 1's 32 MiB chunks (sent four at
// a time, so they arrive out of order).
const bigSize = 128<<20 + 3<<20

// TestActionsCache saves and restores a directory with @actions/cache
// 6.3.0 under node, for protocol versions 1 and 2: an exact hit, a hit by a
// restore key (prefix), a miss; then a pull request's token restores main's
// entry and its save of the same key does not replace main's.
func TestActionsCache(t *testing.T) {
	if testing.Short() {
		t.Skip("starts cache-serve and node")
	}
	if runtime.GOOS != "linux" {
		t.Skip("@actions/cache's tar and zstd calls are tested on Linux")
	}
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			start := time.Now()
			s := startServer(t)
			mainC := newClient(t, s, version, s.runtimeToken(t, mainToken))
			prC := newClient(t, s, version, s.runtimeToken(t, prToken))

			// The paths are absolute: the archive holds them so (tar -P), and
			// a restore writes them back where they were.
			dir := filepath.Join(t.TempDir(), "deps")
			makeTree(t, dir, uint64(version), bigSize)
			want := snapshot(t, dir)
			key := fmt.Sprintf("deps-linux-v%d-%x", version, sha256.Sum256([]byte(dir)))

			log := mustSave(t, mainC, key, dir)
			checkUploadShape(t, version, log)

			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if got, log := mainC.restore([]string{"deps-linux-other", "deps-linux-v"}, dir); got != key {
				t.Fatalf("restore by the restore key deps-linux-v: matched %q, want %q\n%s", got, key, log)
			}
			want.check(t, dir, "restored by restore key")

			if got, log := mainC.restore([]string{"nothing-here", "nothing-"}, dir); got != "" {
				t.Fatalf("restore of keys nobody saved: matched %q, want a miss\n%s", got, log)
			}

			// A pull request reads main's entry ...
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if got, log := prC.restore([]string{key}, dir); got != key {
				t.Fatalf("PR restore of main's %s: matched %q\n%s", key, got, log)
			}
			want.check(t, dir, "PR restored main's entry")

			// ... and its save of the same key and paths, with other bytes,
			// lands in its own scope: main's entry is what main gets back.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			makeTree(t, dir, 100+uint64(version), 1<<20)
			prTree := snapshot(t, dir)
			prID, prLog := prC.save(key, dir)
			t.Logf("PR save of main's key: cacheId %d", prID)

			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if got, log := mainC.restore([]string{key}, dir); got != key {
				t.Fatalf("main's restore after the PR's save: matched %q\n%s", got, log)
			}
			want.check(t, dir, "main's entry after the PR saved the same key")

			// The PR, reading its own scope first, sees its own save when it
			// made one (the server may also refuse it outright).
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if got, log := prC.restore([]string{key}, dir); got != key {
				t.Fatalf("PR restore after its save: matched %q\n%s", got, log)
			}
			if prID > 0 && !strings.Contains(prLog, "Failed to save") {
				prTree.check(t, dir, "the PR's own entry, read first from its own scope")
			} else {
				want.check(t, dir, "main's entry, the PR's save refused")
			}
			t.Logf("v%d: %s for a %d MiB save, 4 restores and a small save", version, time.Since(start).Round(time.Millisecond), bigSize>>20)
		})
	}
}

// checkUploadShape checks, from the package's log, that the big archive
// took the paths meant: over 128 MiB, so that version 2's uploadFile goes
// through Put Block and Put Block List (its single-shot limit), and in
// version 1 at least five 32 MiB chunks.
func checkUploadShape(t *testing.T, version int, log string) {
	t.Helper()
	m := cacheSize.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("save: no %q line in the log:\n%s", cacheSize, log)
	}
	if n, _ := strconv.ParseInt(m[1], 10, 64); n <= 128<<20 {
		t.Fatalf("save: the archive is %d bytes, not over 128 MiB: the test data compressed", n)
	}
	if n := strings.Count(log, "Uploading chunk of size"); version == 1 && n < 5 {
		t.Errorf("v1 save: %d chunks in the log, want at least 5 (32 MiB each):\n%s", n, log)
	}
}

var cacheSize = regexp.MustCompile(`::debug::File Size: (\d+)`)
