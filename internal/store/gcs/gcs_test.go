package gcsstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"gocloud.dev/blob"
	storagev1 "google.golang.org/api/storage/v1"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	gcsstore "github.com/tekton-cache/tekton-cache/internal/store/gcs"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

const bucket = "tekton-cache-test"

// startFakeGCS starts fake-gcs-server on a free port and returns host:port.
func startFakeGCS(t testing.TB) string {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	return testserver.FakeGCS(t, "")
}

// TestFakeGCS runs everything against fake-gcs-server.
func TestFakeGCS(t *testing.T) {
	host := setUp(t)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, "gs://"+bucket+"/"+storetest.NewPrefix()) },
			storetest.Options{
				Lacks:         []string{"BlobStager"},
				LargeSize:     20 << 20,
				Missing:       func(t *testing.T) store.Store { return open(t, "gs://no-such-bucket-here/p") },
				MissingWant:   []string{`bucket "no-such-bucket-here" does not exist`},
				MissingMisses: []string{"GetRef", "StatBlob"},
				Leftovers:     leftovers,
			})
	})
	t.Run("EmulatorHostWithScheme", func(t *testing.T) {
		t.Setenv("STORAGE_EMULATOR_HOST", "http://"+host)
		st := open(t, "gs://"+bucket+"/"+storetest.NewPrefix())
		d := storetest.PutBlob(t, st, []byte("hello"))
		if info, err := st.StatBlob(t.Context(), d.Digest); err != nil || info.Size != 5 {
			t.Fatalf("StatBlob = %+v, %v", info, err)
		}
	})
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, host) })
	t.Run("UnreachableEndpoint", testUnreachable)
	t.Run("UnknownParameter", func(t *testing.T) {
		u, _ := url.Parse("gs://" + bucket + "/p?no_such_param=1")
		if _, err := gcsstore.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "no_such_param") {
			t.Fatalf("Open with an unknown parameter = %v, want it named", err)
		}
	})
	t.Run("EndpointMustBeGoogleOrLoopback", func(t *testing.T) {
		for _, ep := range []string{"https://evil.example.com/storage/v1/", "http://storage.googleapis.com/storage/v1/", "https://googleapis.com.evil.example/storage/v1/"} {
			u, _ := url.Parse("gs://" + bucket + "/p?endpoint=" + url.QueryEscape(ep))
			if _, err := gcsstore.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("Open with endpoint %s = %v, want it refused", ep, err)
			}
		}
	})
	t.Run("GRPCRefused", func(t *testing.T) {
		for _, q := range []string{"grpc=true", "zonal=true"} {
			u, _ := url.Parse("gs://" + bucket + "/p?" + q)
			if _, err := gcsstore.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), strings.Split(q, "=")[0]) {
				t.Errorf("Open with %s = %v, want it refused and named", q, err)
			}
		}
	})
	t.Run("ReferenceToolParameters", func(t *testing.T) {
		st := open(t, "gs://"+bucket+"/"+storetest.NewPrefix()+"?access_id=ci@p.iam.gserviceaccount.com&private_key_path=/nonexistent")
		storetest.PutBlob(t, st, []byte("hello"))
	})
	t.Run("Writer", testWriter)
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, "gs://"+bucket+"/"+storetest.NewPrefix())) })
	t.Run("Prune", func(t *testing.T) {
		gctest.Run(t, func(t *testing.T) store.Store {
			return store.Checked(open(t, "gs://"+bucket+"/"+storetest.NewPrefix()))
		})
	})
}

// BenchmarkConformance measures the store operations against fake-gcs-server.
func BenchmarkConformance(b *testing.B) {
	setUp(b)
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b, "gs://"+bucket+"/"+storetest.NewPrefix()) })
}

// setUp starts fake-gcs-server for t, points the client at it, creates the
// bucket and returns the server's host:port.
func setUp(t testing.TB) string {
	host := startFakeGCS(t)
	isolateGoogle(t)
	t.Setenv("STORAGE_EMULATOR_HOST", host)
	createBucket(t, bucket)
	return host
}

func open(t testing.TB, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, gcsstore.Open, raw)
}

// isolateGoogle keeps the developer's gcloud credentials and any metadata
// server out of the tests.
func isolateGoogle(t testing.TB) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	t.Setenv("STORAGE_EMULATOR_HOST_GRPC", "")
}

func createBucket(t testing.TB, name string) {
	st := open(t, "gs://"+name)
	var c *storagev1.Service
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *storagev1.Service behind the bucket")
	}
	if _, err := c.Buckets.Insert("test-project", &storagev1.Bucket{Name: name}).Context(t.Context()).Do(); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

// leftovers lists the objects under the prefix of st, through the
// bucket's client: what GCS made visible of a failed resumable upload.
func leftovers(t *testing.T, st store.Store) []string {
	obj := st.(*store.ObjectStore)
	var c *storagev1.Service
	if !obj.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *storagev1.Service behind the bucket")
	}
	prefix := strings.TrimPrefix(obj.String(), "gs://"+bucket+"/") + "/"
	var left []string
	err := c.Objects.List(bucket).Prefix(prefix).Pages(t.Context(), func(page *storagev1.Objects) error {
		for _, o := range page.Items {
			left = append(left, "object "+o.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", prefix, err)
	}
	return left
}

// testWrongCredentials uses a service account key whose token request is
// refused, then one whose token the storage endpoint refuses. Both servers
// listen on 127.0.0.1.
func testWrongCredentials(t *testing.T, gcsHost string) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	os.Unsetenv("STORAGE_EMULATOR_HOST")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))}))
	const token = "ya29.secret-access-token-7e1d"
	var tokenOK atomic.Bool
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !tokenOK.Load() {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
			return
		}
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, token)
	}))
	defer tokens.Close()
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(403)
		fmt.Fprint(w, `{"error":{"code":403,"message":"ci@p.iam.gserviceaccount.com does not have storage.objects.get access.","errors":[{"reason":"forbidden","message":"denied"}]}}`)
	}))
	defer forbidden.Close()

	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": keyPEM,
		"client_email": "ci@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": tokens.URL + "/token",
	})
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	keyLine := strings.Split(keyPEM, "\n")[1]

	prefix := storetest.NewPrefix()
	name := "gs://" + bucket + "/" + prefix
	st := open(t, name+"?endpoint=http://"+gcsHost+"/storage/v1/")
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: name, Says: []string{"cannot get a Google access token (invalid_grant)", "GOOGLE_APPLICATION_CREDENTIALS"}, Secrets: []string{keyLine}})

	tokenOK.Store(true)
	st = open(t, name+"?endpoint="+forbidden.URL+"/storage/v1/")
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: name, Says: []string{"access denied (HTTP 403", "GOOGLE_APPLICATION_CREDENTIALS"}, Secrets: []string{keyLine, token}})
}

// testWriter writes through the gocloud bucket's Writer (the driver's
// Write and Close, which the store's Put does not use): what is written in
// several calls is read back whole and in ranges, and a write whose context
// is cancelled leaves no object.
func testWriter(t *testing.T) {
	st := open(t, "gs://"+bucket+"/"+storetest.NewPrefix())
	bkt := st.Bucket().(*cloudblob.Bucket).Blob()
	ctx := t.Context()
	w, err := bkt.NewWriter(ctx, "w/one", &blob.WriterOptions{ContentType: "application/octet-stream", BufferSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 0, 600<<10)
	for i := 0; len(want) < 600<<10; i++ {
		chunk := []byte(strings.Repeat(fmt.Sprintf("%07d ", i), 1000))
		want = append(want, chunk...)
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	got, err := bkt.ReadAll(ctx, "w/one")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(want))
	}
	r, err := bkt.NewRangeReader(ctx, "w/one", 1000, 5000, nil)
	if err != nil {
		t.Fatal(err)
	}
	part, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(part, want[1000:6000]) || r.Size() != int64(len(want)) {
		t.Fatalf("range read %d bytes (%v), size %d, want 5000 and %d", len(part), err, r.Size(), len(want))
	}
	if r, err := bkt.NewRangeReader(ctx, "w/one", int64(len(want)), -1, nil); err != nil {
		t.Fatalf("a range from the end = %v, want an empty read", err)
	} else {
		b, _ := io.ReadAll(r)
		r.Close()
		if len(b) != 0 {
			t.Fatalf("a range from the end read %d bytes", len(b))
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	w, err = bkt.NewWriter(cctx, "w/two", &blob.WriterOptions{ContentType: "application/octet-stream", BufferSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(want[:300<<10]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Close(); err == nil {
		t.Fatal("Close after a cancel = nil, want an error")
	}
	if ok, err := bkt.Exists(ctx, "w/two"); ok || err != nil {
		t.Fatalf("a cancelled write left an object (%v, %v)", ok, err)
	}
}

// TestRangeFromTheWrongOffsetIsRefused: a server that answers a ranged read
// with another part of the object is refused, not read from.
func TestRangeFromTheWrongOffsetIsRefused(t *testing.T) {
	isolateGoogle(t)
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-4/100")
		w.WriteHeader(http.StatusPartialContent)
		w.Write([]byte("hello"))
	}))
	defer srv.Close()
	st := open(t, "gs://"+bucket+"/p?anonymous=true&endpoint="+url.QueryEscape(srv.URL+"/storage/v1/"))
	bkt := st.Bucket().(*cloudblob.Bucket).Blob()
	if _, err := bkt.NewRangeReader(t.Context(), "k", 10, 5, nil); err == nil || !strings.Contains(err.Error(), "Content-Range") {
		t.Fatalf("a ranged read answered from byte 0 = %v, want it refused", err)
	}
	r, err := bkt.NewRangeReader(t.Context(), "k", 0, 5, nil)
	if err != nil {
		t.Fatalf("a ranged read from byte 0 = %v", err)
	}
	defer r.Close()
	if b, _ := io.ReadAll(r); string(b) != "hello" || r.Size() != 100 {
		t.Fatalf("read %q of size %d, want hello of 100", b, r.Size())
	}
}

func testUnreachable(t *testing.T) {
	host := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	t.Setenv("STORAGE_EMULATOR_HOST", "http://"+host)
	st := open(t, "gs://"+bucket+"/p")
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: "gs://" + bucket + "/p", Says: []string{"cannot reach http://" + host + ": connection refused"}})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
