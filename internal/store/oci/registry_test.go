package oci_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// The registries are started once per test binary run, on first use, and
// stopped by TestMain: starting one per test would cost more than the tests.

const installRegistry = "go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2"

// Credentials of the registry that requires basic auth.
const (
	authUser = "ciuser"
	authPass = "s3cret-Pa55" // must never appear in an error message
)

var servers struct {
	mu       sync.Mutex
	hosts    map[bool]string // auth -> 127.0.0.1:port
	failed   map[bool]string
	cleanups []func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	servers.mu.Lock()
	for i := len(servers.cleanups) - 1; i >= 0; i-- {
		servers.cleanups[i]()
	}
	servers.mu.Unlock()
	os.Exit(code)
}

// processTB lets testserver start a process that outlives the test asking
// for it: TestMain runs its cleanups. Only the methods testserver calls are
// implemented; a fatal error panics and is reported by registry.
type processTB struct {
	testing.TB // nil
}

type startFailure string

func (processTB) Helper()          {}
func (processTB) Cleanup(f func()) { servers.cleanups = append(servers.cleanups, f) }
func (processTB) Fatalf(format string, args ...any) {
	panic(startFailure(fmt.Sprintf(format, args...)))
}
func (processTB) Fatal(args ...any) { panic(startFailure(fmt.Sprint(args...))) }

// registry returns the host:port of a distribution registry started for the
// test binary (with basic auth when auth is set), skipping t when the
// registry binary is missing (failing it when CACHE_TEST_DISALLOW_SKIP is set).
func registry(t *testing.T, auth bool) string {
	t.Helper()
	bin := testserver.Binary(t, "registry", installRegistry)
	servers.mu.Lock()
	defer servers.mu.Unlock()
	if servers.hosts == nil {
		servers.hosts, servers.failed = map[bool]string{}, map[bool]string{}
	}
	if msg, ok := servers.failed[auth]; ok {
		t.Fatal(msg)
	}
	if h, ok := servers.hosts[auth]; ok {
		return h
	}
	h, err := startRegistry(bin, auth)
	if err != "" {
		servers.failed[auth] = err
		t.Fatal(err)
	}
	servers.hosts[auth] = h
	return h
}

func startRegistry(bin string, auth bool) (host string, failure string) {
	defer func() {
		if r := recover(); r != nil {
			failure = fmt.Sprintf("starting registry: %v", r)
		}
	}()
	dir, err := os.MkdirTemp("", "tekton-cache-oci-test-")
	if err != nil {
		return "", err.Error()
	}
	servers.cleanups = append(servers.cleanups, func() { os.RemoveAll(dir) })
	// The address and storage directory are set by REGISTRY_* variables.
	cfg := "version: 0.1\n" +
		"log: {level: error, accesslog: {disabled: true}}\n" +
		"storage:\n  filesystem: {rootdirectory: /nonexistent}\n  delete: {enabled: true}\n" +
		"http: {addr: 127.0.0.1:1}\n"
	if auth {
		hash, err := bcrypt.GenerateFromPassword([]byte(authPass), bcrypt.MinCost)
		if err != nil {
			return "", err.Error()
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(authUser+":"+string(hash)+"\n"), 0o600); err != nil {
			return "", err.Error()
		}
		cfg += fmt.Sprintf("auth: {htpasswd: {realm: tekton-cache-test, path: %s}}\n", pw)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return "", err.Error()
	}
	tb := processTB{}
	host = fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(tb))
	p := testserver.Start(tb, bin, []string{"serve", cfgPath}, []string{
		"OTEL_TRACES_EXPORTER=none",
		"REGISTRY_HTTP_ADDR=" + host,
		"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=" + filepath.Join(dir, "data"),
	})
	want := http.StatusOK
	if auth {
		want = http.StatusUnauthorized
	}
	p.WaitHTTP(tb, "http://"+host+"/v2/", want)
	return host, ""
}

var repoSeq atomic.Int64

var notRepoChars = regexp.MustCompile(`[^a-z0-9]+`)

// newRepo returns a repository name used by no other test.
func newRepo(t *testing.T) string {
	n := strings.Trim(notRepoChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(n) > 60 {
		n = n[len(n)-60:]
		n = strings.TrimLeft(n, "-")
	}
	return fmt.Sprintf("test/%s-%d", n, repoSeq.Add(1))
}

// openStore opens oci://host/<fresh repo>.
func openStore(t *testing.T, host string, options ...oci.Option) *oci.Store {
	t.Helper()
	return openRepo(t, host, newRepo(t), options...)
}

func openRepo(t *testing.T, host, repo string, options ...oci.Option) *oci.Store {
	t.Helper()
	u := &url.URL{Scheme: "oci", Host: host, Path: "/" + repo}
	s, err := oci.OpenURL(context.Background(), u, store.Options{Logf: t.Logf}, options...)
	if err != nil {
		t.Fatalf("OpenURL(%s): %v", u, err)
	}
	return s
}

// dockerConfig writes a docker config ({"auths": ...}) for host to
// dir/file and points DOCKER_CONFIG at dir.
func dockerConfig(t *testing.T, host, user, pass, file string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

// counter is an http.RoundTripper that counts the requests it forwards.
type counter struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	seen map[string]int // "METHOD kind", kind = blob, upload, manifest, tags, ping
}

func newCounter() *counter {
	return &counter{rt: http.DefaultTransport.(*http.Transport).Clone(), seen: map[string]int{}}
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := "other"
	p := req.URL.Path
	switch {
	case p == "/v2/":
		kind = "ping"
	case strings.Contains(p, "/blobs/uploads/"):
		kind = "upload"
	case strings.Contains(p, "/blobs/"):
		kind = "blob"
	case strings.Contains(p, "/manifests/"):
		kind = "manifest"
	case strings.HasSuffix(p, "/tags/list"):
		kind = "tags"
	}
	c.mu.Lock()
	c.seen[req.Method+" "+kind]++
	c.mu.Unlock()
	return c.rt.RoundTrip(req)
}

func (c *counter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[key]
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.seen)
}
