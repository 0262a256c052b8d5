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

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// Credentials of the registry that requires basic auth.
const (
	authUser = "ciuser"
	authPass = "s3cret-Pa55" // must never appear in an error message
)

// registry starts a distribution registry for t (with basic auth when auth
// is set) and returns its host:port; it skips t when the registry binary is
// missing, and fails it when CACHE_TEST_DISALLOW_SKIP is set.
func registry(t testing.TB, auth bool) string {
	t.Helper()
	if auth {
		return testserver.Registry(t, authUser, authPass)
	}
	return testserver.Registry(t, "", "")
}

var repoSeq atomic.Int64

var notRepoChars = regexp.MustCompile(`[^a-z0-9]+`)

// newRepo returns a repository name used by no other test.
func newRepo(t testing.TB) string {
	n := strings.Trim(notRepoChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(n) > 60 {
		n = n[len(n)-60:]
		n = strings.TrimLeft(n, "-")
	}
	return fmt.Sprintf("test/%s-%d", n, repoSeq.Add(1))
}

// openStore opens oci://host/<fresh repo>.
func openStore(t testing.TB, host string, options ...oci.Option) *oci.Store {
	t.Helper()
	return openRepo(t, host, newRepo(t), options...)
}

func openRepo(t testing.TB, host, repo string, options ...oci.Option) *oci.Store {
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
