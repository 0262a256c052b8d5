package httpstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/engine/enginetest"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	s3store "github.com/tekton-cache/tekton-cache/internal/store/s3"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// The token of the tests' principal, which writes and reads scope "ci".
const token = "tc-test-token-6b1e0f"

func tokens(t testing.TB) server.Authenticator {
	t.Helper()
	a, err := server.ParseTokens(fmt.Appendf(nil, "tokens:\n  - name: ci\n    sha256: %s\n    write: ci\n", digest.FromBytes([]byte(token)).Hex()))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serve starts a server over backing on 127.0.0.1 and returns its URL.
func serve(t testing.TB, backing store.Store, o server.Options) string {
	u, _ := serveIdle(t, backing, o)
	return u
}

// serveIdle is serve, and a function that waits until no request is in
// flight: a client's put that failed returns before the server sees the
// connection end and drops what it staged.
func serveIdle(t testing.TB, backing store.Store, o server.Options) (string, func()) {
	t.Helper()
	srv, err := server.New(backing, o)
	if err != nil {
		t.Fatal(err)
	}
	var inFlight sync.WaitGroup
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Done()
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL, inFlight.Wait
}

// open opens the client of raw as store.Mux.Open does.
func open(t testing.TB, raw string) store.Store {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := httpstore.Open(context.Background(), u, store.Options{RetryDelay: time.Millisecond})
	if err != nil {
		t.Fatalf("Open(%s): %v", raw, err)
	}
	return store.Checked(store.WithRetries(st, store.Options{RetryDelay: time.Millisecond}))
}

// dirStore opens a directory store as cache-serve does.
func dirStore(t testing.TB, dir string) store.Store {
	t.Helper()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return store.Checked(store.WithRetries(store.NewObjectStore(b), store.Options{}))
}

// conformance is what the client lacks, and how long a key may be in the
// tests' scope.
func conformance(leftovers func(t *testing.T, s store.Store) []string) storetest.Options {
	return storetest.Options{
		Lacks:     []string{"Deleter", "BlobStager", "BlobLister", "MetaStore"},
		MaxKeyLen: server.MaxKeyLen("ci"),
		Leftovers: leftovers,
	}
}

// TestConformanceOverDirectory runs the conformance suite against the
// client of a server over a directory, with a token; a failed put must
// leave no file in the directory.
func TestConformanceOverDirectory(t *testing.T) {
	t.Setenv(httpstore.TokenEnv, token)
	type served struct {
		dir  string
		idle func()
	}
	servers := map[string]served{}
	storetest.Run(t, func(t *testing.T) store.Store {
		dir := t.TempDir()
		u, idle := serveIdle(t, dirStore(t, dir), server.Options{Authenticator: tokens(t)})
		st := open(t, u)
		servers[st.String()] = served{dir, idle}
		return st
	}, conformance(func(t *testing.T, s store.Store) []string {
		var left []string
		srv := servers[s.String()]
		srv.idle()
		filepath.WalkDir(srv.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		return left
	}))
}

// TestMinIO runs the conformance suite and a save and restore through a
// server over a MinIO bucket.
func TestMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	t.Setenv(httpstore.TokenEnv, token)
	raw := minioBucket(t)
	backing := func(t *testing.T) store.Store {
		u, _ := url.Parse(raw(storetest.NewPrefix()))
		st, err := s3store.Open(t.Context(), u, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return store.Checked(store.WithRetries(st, store.Options{}))
	}
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			return open(t, serve(t, backing(t), server.Options{Authenticator: tokens(t)}))
		}, conformance(nil))
	})
	t.Run("SaveRestore", func(t *testing.T) {
		enginetest.SaveRestore(t, open(t, serve(t, backing(t), server.Options{Authenticator: tokens(t)})))
	})
}

// minioBucket starts MinIO with a bucket and returns the s3:// URL of a
// prefix in it.
func minioBucket(t *testing.T) func(prefix string) string {
	return testserver.MinIOBucket(t, "tchttpminio", "tc-http-minio-secret-2c7d", "httpstore")
}

// TestSaveRestoreOverDirectory saves and restores through the engine.
func TestSaveRestoreOverDirectory(t *testing.T) {
	t.Setenv(httpstore.TokenEnv, token)
	enginetest.SaveRestore(t, open(t, serve(t, dirStore(t, t.TempDir()), server.Options{Authenticator: tokens(t)})))
}

// TestErrors: a wrong token, no token, and no server give one line that
// names the store and the cause, never the token.
func TestErrors(t *testing.T) {
	base := serve(t, dirStore(t, t.TempDir()), server.Options{Authenticator: tokens(t)})
	t.Setenv(httpstore.TokenEnv, "wrong-token-4d2a91")
	storetest.CheckAllOps(t, open(t, base), storetest.ErrorWant{Store: base, Says: []string{"HTTP 401", "unknown token", httpstore.TokenEnv}, Secrets: []string{"wrong-token-4d2a91", token}})
	t.Setenv(httpstore.TokenEnv, "")
	storetest.CheckAllOps(t, open(t, base), storetest.ErrorWant{Store: base, Says: []string{"HTTP 401", "needs a token", "no token"}})

	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(token+"\n"), 0o600)
	t.Setenv(httpstore.TokenFileEnv, file)
	st := open(t, base)
	storetest.PutBlob(t, st, []byte("with the token of a file"))

	t.Setenv(httpstore.TokenFileEnv, "")
	dead := fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))
	storetest.CheckAllOps(t, open(t, dead), storetest.ErrorWant{Store: dead, Says: []string{"cannot reach", "connection refused"}})
}

// TestOpen refuses URLs that cannot work.
func TestOpen(t *testing.T) {
	for raw, says := range map[string]string{
		"http://user:pw@host:8080": "credentials do not go in the URL",
		"http://host:8080/?x=1":    "no query parameters",
		"http:///path":             "no host",
	} {
		u, _ := url.Parse(raw)
		_, err := httpstore.Open(t.Context(), u, store.Options{})
		if !errors.Is(err, store.ErrBadURL) || !strings.Contains(err.Error(), says) || strings.Contains(err.Error(), "pw") {
			t.Errorf("Open(%s) = %v, want ErrBadURL saying %q", raw, err, says)
		}
	}
	t.Setenv(httpstore.TokenEnv, "a")
	t.Setenv(httpstore.TokenFileEnv, "/b")
	u, _ := url.Parse("http://host:8080")
	if _, err := httpstore.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "set one") {
		t.Errorf("Open with both token variables = %v", err)
	}
}

// TestMissingBlobs asks once which of many blobs the server lacks.
func TestMissingBlobs(t *testing.T) {
	t.Setenv(httpstore.TokenEnv, token)
	u, _ := url.Parse(serve(t, dirStore(t, t.TempDir()), server.Options{Authenticator: tokens(t)}))
	raw, err := httpstore.Open(t.Context(), u, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := raw.(*httpstore.Store)
	var all, want []digest.Digest
	for i := range 50 {
		data := fmt.Appendf(nil, "blob %d", i)
		d := digest.FromBytes(data)
		all = append(all, d)
		if i%3 == 0 {
			want = append(want, d)
			continue
		}
		if err := hs.PutBlob(t.Context(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := hs.MissingBlobs(t.Context(), all)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("MissingBlobs = %v, %v; want %v", got, err, want)
	}
}

// TestIncrementalSaveAsksOnce: an incremental save through an http://
// store asks once which of its base's packs the server still holds
// (POST /v1/blobs:missing), not a HEAD per pack; and a pack gone from the
// server is packed again.
func TestIncrementalSaveAsksOnce(t *testing.T) {
	t.Setenv(httpstore.TokenEnv, token)
	backing := dirStore(t, t.TempDir())
	srv, err := server.New(backing, server.Options{Authenticator: tokens(t)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		route := r.Method + " " + r.URL.Path
		if strings.HasPrefix(r.URL.Path, httpapi.BlobsPath) {
			route = r.Method + " " + httpapi.BlobsPath
		}
		calls[route]++
		mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	st := open(t, ts.URL)
	src := t.TempDir()
	for i := range 40 {
		data := bytes.Repeat(fmt.Appendf(nil, "file %d ", i), 20_000)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first, err := engine.Save(t.Context(), st, engine.SaveOptions{Key: "go-1", Folders: []string{src}, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	base, err := st.GetRef(t.Context(), "go-1")
	if err != nil || len(base.Packs) < 3 {
		t.Fatalf("the first save: %d packs, %v; want several", len(base.Packs), err)
	}
	// One of the base's packs is gone from the server's store.
	if err := backing.(store.Deleter).DeleteBlob(t.Context(), base.Packs[0].Digest); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "new"), []byte("a new file"), 0o644); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clear(calls)
	mu.Unlock()
	second, err := engine.Save(t.Context(), st, engine.SaveOptions{Key: "go-2", Folders: []string{src}, PackSize: 1 << 20, BaseKeys: []string{"go-"}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := maps.Clone(calls)
	mu.Unlock()
	calls = got
	if calls["POST "+httpapi.MissingPath] != 1 {
		t.Errorf("the incremental save asked %d times which blobs are missing, want once: %v", calls["POST "+httpapi.MissingPath], calls)
	}
	// HEADs left: one for each blob the save uploads (its new packs and
	// index) and one for the index the folder's restore state names, none
	// for the base's packs.
	if heads := calls["HEAD "+httpapi.BlobsPath]; heads > second.UploadedBlobs+1 {
		t.Errorf("%d blob HEADs for %d blobs uploaded: the base's packs were stat'ed one by one (%v)", heads, second.UploadedBlobs, calls)
	}
	if second.ReusedPacks != len(base.Packs)-1 || first.UploadedBlobs == 0 {
		t.Errorf("reused %d of the base's %d packs, want all but the one gone", second.ReusedPacks, len(base.Packs))
	}
	dst := t.TempDir()
	if r, err := engine.Restore(t.Context(), st, engine.RestoreOptions{Key: "go-2", Folders: []string{dst}}); err != nil || !r.Restored {
		t.Fatalf("Restore(go-2) = %+v, %v", r, err)
	}
	for _, name := range []string{"f00", "f39", "new"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s restored wrong: %v", name, err)
		}
	}
}
