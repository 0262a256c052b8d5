package gcsstore_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/storage"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	gcsstore "github.com/tekton-cache/tekton-cache/internal/store/gcs"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

const bucket = "tekton-cache-test"

// startFakeGCS starts fake-gcs-server on a free port and returns host:port.
func startFakeGCS(t *testing.T) string {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	return testserver.FakeGCS(t, "")
}

// TestFakeGCS runs everything against fake-gcs-server.
func TestFakeGCS(t *testing.T) {
	host := startFakeGCS(t)
	isolateGoogle(t)
	t.Setenv("STORAGE_EMULATOR_HOST", host)
	createBucket(t, bucket)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, "gs://"+bucket+"/"+storetest.NewPrefix()) },
			storetest.Options{LargeSize: 20 << 20})
	})
	t.Run("EmulatorHostWithScheme", func(t *testing.T) {
		t.Setenv("STORAGE_EMULATOR_HOST", "http://"+host)
		st := open(t, "gs://"+bucket+"/"+storetest.NewPrefix())
		d := storetest.PutBlob(t, st, []byte("hello"))
		if info, err := st.StatBlob(t.Context(), d.Digest); err != nil || info.Size != 5 {
			t.Fatalf("StatBlob = %+v, %v", info, err)
		}
	})
	t.Run("FailedLargePutLeavesNothing", testFailedLargePut)
	t.Run("MissingBucket", testMissingBucket)
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
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, "gs://"+bucket+"/"+storetest.NewPrefix())) })
}

func open(t *testing.T, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, gcsstore.Open, raw)
}

// isolateGoogle keeps the developer's gcloud credentials and any metadata
// server out of the tests.
func isolateGoogle(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	t.Setenv("STORAGE_EMULATOR_HOST_GRPC", "")
}

func createBucket(t *testing.T, name string) {
	st := open(t, "gs://"+name)
	var c *storage.Client
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *storage.Client behind the bucket")
	}
	if err := c.Bucket(name).Create(t.Context(), "test-project", nil); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

// testFailedLargePut fails an upload after its first chunk was sent: the
// resumable upload must not be finalized.
func testFailedLargePut(t *testing.T) {
	st := open(t, "gs://"+bucket+"/"+storetest.NewPrefix())
	data, d := storetest.RandomBlob(t, 40<<20)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if err := st.PutBlob(t.Context(), d, int64(len(bad)), bytes.NewReader(bad)); err == nil {
		t.Fatal("PutBlob of corrupt bytes succeeded")
	}
	if _, err := st.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StatBlob after a failed put = %v, want not found", err)
	}
}

func testMissingBucket(t *testing.T) {
	st := open(t, "gs://no-such-bucket-here/p")
	name := "gs://no-such-bucket-here/p"
	want := []string{`bucket "no-such-bucket-here" does not exist`}
	data := []byte("some bytes")
	err := st.PutBlob(t.Context(), digest.FromBytes(data), int64(len(data)), bytes.NewReader(data))
	storetest.CheckError(t, "PutBlob", err, name, want)
	_, err = st.ListRefs(t.Context(), "some")
	storetest.CheckError(t, "ListRefs", err, name, want)
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
	checkAllOps(t, st, name, []string{"cannot get a Google access token (invalid_grant)", "GOOGLE_APPLICATION_CREDENTIALS"}, keyLine)

	tokenOK.Store(true)
	st = open(t, name+"?endpoint="+forbidden.URL+"/storage/v1/")
	checkAllOps(t, st, name, []string{"access denied (HTTP 403", "GOOGLE_APPLICATION_CREDENTIALS"}, keyLine, token)
}

func testUnreachable(t *testing.T) {
	host := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	t.Setenv("STORAGE_EMULATOR_HOST", "http://"+host)
	st := open(t, "gs://"+bucket+"/p")
	checkAllOps(t, st, "gs://"+bucket+"/p", []string{"cannot reach http://" + host + ": connection refused"})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// checkAllOps runs each store operation and checks its error.
func checkAllOps(t *testing.T, st store.Store, storeName string, wants []string, secrets ...string) {
	t.Helper()
	data := make([]byte, 1000)
	rand.Read(data)
	_, err := st.GetRef(t.Context(), "some-key")
	storetest.CheckError(t, "GetRef", err, storeName, wants, secrets...)
	err = st.PutBlob(t.Context(), digest.FromBytes(data), int64(len(data)), bytes.NewReader(data))
	storetest.CheckError(t, "PutBlob", err, storeName, wants, secrets...)
	_, err = st.ListRefs(t.Context(), "some")
	storetest.CheckError(t, "ListRefs", err, storeName, wants, secrets...)
	_, err = st.StatBlob(t.Context(), digest.FromBytes(data))
	storetest.CheckError(t, "StatBlob", err, storeName, wants, secrets...)
}
