package httpstore_test

// Fault tests of issue 17: uploads cut or corrupted between the client and
// cache-serve (a faultproxy in front of a real server on 127.0.0.1), over a
// directory (the server stages) and over MinIO (it streams into PutBlob).

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/engine/enginetest"
	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
	s3store "github.com/tekton-cache/tekton-cache/internal/store/s3"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// faulty is a server over a backing store behind a faultproxy.
type faulty struct {
	proxy *faultproxy.Proxy
	// client is the http:// store through the proxy, with retries.
	client store.Store
	// leftovers lists what the backing store holds beyond its refs and
	// whole blobs: staging files, incomplete uploads, objects.
	leftovers func(t *testing.T) []string
	// putsDone counts the blob PUTs the server has finished handling.
	putsDone atomic.Int64
}

// backend is a store for the server and a function listing every object
// and upload in it.
type backend struct {
	st    store.Store
	files func(t *testing.T) []string
}

func newFaulty(t *testing.T, b backend) *faulty {
	t.Helper()
	t.Setenv(httpstore.TokenEnv, token)
	srv, err := server.New(b.st, server.Options{Authenticator: tokens(t), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f := &faulty{leftovers: b.files}
	var inFlight sync.WaitGroup
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Done()
		srv.ServeHTTP(w, r)
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, httpapi.BlobsPath) {
			f.putsDone.Add(1)
		}
	}))
	t.Cleanup(ts.Close)
	f.proxy = faultproxy.New(t, ts.URL)
	f.client = open(t, f.proxy.URL())
	return f
}

// waitPuts waits until the server has finished n blob PUTs: a client whose
// upload was cut returns before the server sees its connection end.
func (f *faulty) waitPuts(t *testing.T, n int64) {
	t.Helper()
	for i := 0; f.putsDone.Load() < n; i++ {
		if i == 6000 {
			t.Fatalf("the server finished %d blob PUTs, want %d", f.putsDone.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dirBackend(t *testing.T) backend {
	dir := t.TempDir()
	return backend{st: dirStore(t, dir), files: func(*testing.T) []string { return walkFiles(dir) }}
}

func walkFiles(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	return out
}

// backends are the stores the fault tests run over: a directory always,
// MinIO unless -short.
func backends(t *testing.T) map[string]func(t *testing.T) backend {
	b := map[string]func(t *testing.T) backend{"directory": dirBackend}
	if testing.Short() {
		return b
	}
	var once sync.Once
	var raw func(string) string
	b["minio"] = func(t *testing.T) backend {
		once.Do(func() { raw = minioBucket(t) })
		u := raw(storetest.NewPrefix())
		st := openS3(t, u)
		return backend{st: st, files: func(t *testing.T) []string { return minioLeftovers(t, u) }}
	}
	return b
}

// TestCutUpload: a blob PUT cut midway (the server sees its connection
// end) leaves nothing, neither the blob nor a staged or multipart part;
// the client's retry then succeeds, and a save whose first uploads are
// cut publishes an entry that restores to the saved bytes.
func TestCutUpload(t *testing.T) {
	for name, mk := range backends(t) {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			f := newFaulty(t, b)
			ctx := t.Context()
			// Over 5 MiB, so that an S3 upload goes in parts and the cut
			// falls after the first part.
			data, d := storetest.RandomBlob(t, 12<<20)
			f.proxy.Add(faultproxy.Rule{Method: "PUT", Path: httpapi.BlobsPath, Fault: faultproxy.CutRequest, AfterBytes: 7 << 20, Times: -1})
			err := f.client.PutBlob(ctx, d, int64(len(data)), bytes.NewReader(data))
			if err == nil {
				t.Fatal("a put whose every attempt is cut succeeded")
			}
			cut := int64(f.proxy.Count("PUT", httpapi.BlobsPath))
			if cut < 2 {
				t.Fatalf("the client made %d attempts at a cut put, want it to retry", cut)
			}
			f.waitPuts(t, cut)
			if left := b.files(t); len(left) != 0 {
				t.Fatalf("cut uploads left %v", left)
			}
			if _, err := b.st.StatBlob(ctx, d); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the blob of a cut upload: %v, want not found", err)
			}

			// Only the first attempt cut: the retry goes through.
			f.proxy.Clear()
			f.proxy.Add(faultproxy.Rule{Method: "PUT", Path: httpapi.BlobsPath, Fault: faultproxy.CutRequest, AfterBytes: 7 << 20})
			if err := f.client.PutBlob(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatalf("put after one cut attempt: %v", err)
			}
			if n := f.proxy.Count("PUT", httpapi.BlobsPath); n != 2 || f.proxy.Faults() != 1 {
				t.Fatalf("%d PUTs with %d cut, want 2 and 1", n, f.proxy.Faults())
			}
			if got := readBlob(t, f.client, d); !bytes.Equal(got, data) {
				t.Fatal("the blob put after a cut reads back different")
			}

			// A save whose first two blob uploads are cut.
			f.proxy.Clear()
			f.proxy.Add(faultproxy.Rule{Method: "PUT", Path: httpapi.BlobsPath, Fault: faultproxy.CutRequest, AfterBytes: 100_000, Times: 2})
			enginetest.RoundTrip(t, f.client, "go-cut")
			if f.proxy.Faults() != 2 {
				t.Fatalf("%d uploads cut, want 2", f.proxy.Faults())
			}
		})
	}
}

// TestCorruptUpload: bytes changed on their way to the server are refused
// (digest_mismatch) and nothing is kept; the client does not retry a
// refusal, and a save whose pack is corrupted fails without publishing
// its ref, and succeeds once the network is clean.
func TestCorruptUpload(t *testing.T) {
	for name, mk := range backends(t) {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			f := newFaulty(t, b)
			ctx := t.Context()
			data, d := storetest.RandomBlob(t, 3<<20)
			f.proxy.Add(faultproxy.Rule{Method: "PUT", Path: httpapi.BlobsPath, Fault: faultproxy.CorruptRequest, AfterBytes: 2 << 20})
			err := f.client.PutBlob(ctx, d, int64(len(data)), bytes.NewReader(data))
			if !errors.Is(err, digest.ErrMismatch) || !strings.Contains(err.Error(), "nothing kept") {
				t.Fatalf("put of corrupted bytes = %v, want a digest mismatch, nothing kept", err)
			}
			if n := f.proxy.Count("PUT", httpapi.BlobsPath); n != 1 {
				t.Fatalf("%d attempts at a refused put, want 1", n)
			}
			f.waitPuts(t, 1)
			if left := b.files(t); len(left) != 0 {
				t.Fatalf("a refused upload left %v", left)
			}
			if err := f.client.PutBlob(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
				t.Fatalf("the same put, not corrupted: %v", err)
			}
			if got := readBlob(t, f.client, d); !bytes.Equal(got, data) {
				t.Fatal("the blob reads back different")
			}

			// A save: its first blob upload (a pack or the index) corrupted.
			src := filepath.Join(t.TempDir(), "cache")
			os.Mkdir(src, 0o755)
			testtree.Make(t, src)
			f.proxy.Clear()
			f.proxy.Add(faultproxy.Rule{Method: "PUT", Path: httpapi.BlobsPath, Fault: faultproxy.CorruptRequest, AfterBytes: 10})
			_, err = engine.Save(ctx, f.client, engine.SaveOptions{Key: "go-corrupt", Folders: []string{src}, PackSize: 1 << 20, Logf: t.Logf})
			if !errors.Is(err, digest.ErrMismatch) {
				t.Fatalf("a save with a corrupted upload = %v, want a digest mismatch", err)
			}
			if _, err := f.client.GetRef(ctx, "go-corrupt"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the ref of the failed save: %v, want not found", err)
			}
			f.proxy.Clear()
			enginetest.RoundTrip(t, f.client, "go-corrupt")
		})
	}
}

func readBlob(t *testing.T, st store.Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := st.GetBlob(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// openS3 opens the s3:// URL raw as cache-serve does.
func openS3(t *testing.T, raw string) store.Store {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3store.Open(t.Context(), u, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return store.Checked(store.WithRetries(st, store.Options{}))
}

// minioLeftovers lists the objects under the prefix of the s3:// URL raw
// and the multipart uploads under it never completed nor aborted.
func minioLeftovers(t *testing.T, raw string) []string {
	t.Helper()
	obj := storetest.OpenObjectStore(t, s3store.Open, raw)
	var c *s3.Client
	if !obj.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *s3.Client behind the bucket")
	}
	u, _ := url.Parse(raw)
	return testserver.S3Leftovers(t, c, u.Host, strings.TrimPrefix(u.Path, "/")+"/")
}
