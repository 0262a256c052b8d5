package s3store_test

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
	s3store "github.com/tekton-cache/tekton-cache/internal/store/s3"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// server is a running S3-compatible server.
type server struct {
	name     string
	endpoint string // http://127.0.0.1:PORT
	user     string
	secret   string
}

const bucket = "tekton-cache-test"

func startMinIO(t testing.TB) server {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	s := server{name: "minio", user: "tcminioadmin", secret: "tc-minio-secret-8d2f"}
	s.endpoint = testserver.MinIO(t, s.user, s.secret)
	return s
}

func startVersityGW(t *testing.T) server {
	if testing.Short() {
		t.Skip("starts a server: not with -short")
	}
	bin := testserver.Binary(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	port := testserver.FreePort(t)
	s := server{name: "versitygw", endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), user: "tcvgwadmin", secret: "tc-vgw-secret-51ac"}
	p := testserver.Start(t, bin, []string{"--port", fmt.Sprintf("127.0.0.1:%d", port), "--health", "/health", "--quiet", "posix", t.TempDir()},
		[]string{"ROOT_ACCESS_KEY_ID=" + s.user, "ROOT_SECRET_ACCESS_KEY=" + s.secret})
	p.WaitHTTP(t, s.endpoint+"/health", 200)
	return s
}

// TestMinIO runs everything against MinIO, the most faithful S3.
func TestMinIO(t *testing.T) { testServer(t, startMinIO(t)) }

// TestVersityGW runs everything against versitygw (posix backend).
func TestVersityGW(t *testing.T) { testServer(t, startVersityGW(t)) }

// TestRestoreKeyCost measures what resolving a restore key of 1,000
// entries in MinIO costs (docs/BENCHMARKS.md), counting the requests at a
// proxy: one listing (a page per 1,000 keys) and a few ref reads.
func TestRestoreKeyCost(t *testing.T) {
	srv := startMinIO(t)
	setUp(t, srv)
	proxy := faultproxy.New(t, srv.endpoint)
	srv.endpoint = proxy.URL()
	st := store.Checked(store.WithRetries(open(t, srv.storeURL(bucket, storetest.NewPrefix())), store.Options{}))
	all, lazy := storetest.RestoreKeyCost(t, st, 1000, 8, func() int { return proxy.Count("", "") })
	t.Logf("s3 (MinIO), 1,000 entries: reading every candidate %v; lazily %v", all, lazy)
	if lazy.Lists != 1 || lazy.Reads > storetest.MaxLazyReads || lazy.Requests > lazy.Reads+2 {
		t.Fatalf("Newest of 1,000 entries cost %v, want 1 listing (at most 2 pages) and at most %d reads", lazy, storetest.MaxLazyReads)
	}
}

// BenchmarkConformance measures the store operations against MinIO.
func BenchmarkConformance(b *testing.B) {
	srv := startMinIO(b)
	setUp(b, srv)
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b, srv.storeURL(bucket, storetest.NewPrefix())) })
}

// setUp gives the test the server's credentials and creates its bucket.
func setUp(t testing.TB, srv server) {
	isolateAWS(t, srv.user, srv.secret)
	createBucket(t, srv, bucket)
}

func testServer(t *testing.T, srv server) {
	setUp(t, srv)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, srv.storeURL(bucket, storetest.NewPrefix())) },
			storetest.Options{
				Lacks:         []string{"BlobStager"},
				LargeSize:     20 << 20,
				Missing:       func(t *testing.T) store.Store { return open(t, srv.storeURL("no-such-bucket-here", "p")) },
				MissingWant:   []string{`bucket "no-such-bucket-here" does not exist`},
				MissingMisses: []string{"StatBlob"},
				Secrets:       []string{srv.secret},
				Leftovers:     leftovers,
			})
	})
	t.Run("LatePartAfterAbort", func(t *testing.T) { testLatePart(t, srv) })
	t.Run("EndpointAloneIsEnough", func(t *testing.T) { testEndpointDefaults(t, srv) })
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, srv) })
	t.Run("UnreachableEndpoint", func(t *testing.T) { testUnreachable(t) })
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, srv.storeURL(bucket, storetest.NewPrefix()))) })
	t.Run("Prune", func(t *testing.T) {
		gctest.Run(t, func(t *testing.T) store.Store {
			return store.Checked(open(t, srv.storeURL(bucket, storetest.NewPrefix())))
		})
	})
}

func (s server) storeURL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&use_path_style=true&disable_https=true&region=us-east-1", bucket, prefix, s.endpoint)
}

func open(t testing.TB, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, s3store.Open, raw)
}

// isolateAWS keeps the developer's ~/.aws, instance metadata and AWS_*
// settings out of the tests, and sets the server's credentials.
func isolateAWS(t testing.TB, user, secret string) {
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_USE_FIPS_ENDPOINT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	for k, f := range map[string]string{"AWS_CONFIG_FILE": "config", "AWS_SHARED_CREDENTIALS_FILE": "credentials"} {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(k, p)
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", user)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
}

// client returns the S3 client of a store, through gocloud's As.
func client(t testing.TB, st *store.ObjectStore) *s3.Client {
	var c *s3.Client
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *s3.Client behind the bucket")
	}
	return c
}

func createBucket(t testing.TB, srv server, name string) {
	st := open(t, srv.storeURL(name, ""))
	// MinIO may answer 503 "not initialized" for a moment after its
	// health check passes, and the client makes one attempt per request
	// (the store layer retries, not the SDK).
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := client(t, st).CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "StatusCode: 503") || time.Now().After(deadline) {
			t.Fatalf("creating bucket %s: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testEndpointDefaults opens a URL with only an endpoint: region and path
// style are defaulted for S3-compatible servers.
func testEndpointDefaults(t *testing.T, srv server) {
	st := open(t, fmt.Sprintf("s3://%s/%s?endpoint=%s", bucket, storetest.NewPrefix(), srv.endpoint))
	before := time.Now().Add(-time.Minute) // the server's clock, in whole seconds
	desc := storetest.PutBlob(t, st, []byte("hello"))
	if info, err := st.StatBlob(t.Context(), desc.Digest); err != nil || info.Size != 5 || info.Modified.Before(before) || info.Modified.After(time.Now().Add(time.Minute)) {
		t.Fatalf("StatBlob = %+v, %v; want 5 bytes modified about now", info, err)
	}
	t.Setenv("AWS_ENDPOINT_URL_S3", srv.endpoint)
	st = open(t, fmt.Sprintf("s3://%s/%s", bucket, storetest.NewPrefix()))
	storetest.PutBlob(t, st, []byte("hello"))

	u, _ := url.Parse("s3://" + bucket + "/p")
	os.Unsetenv("AWS_ENDPOINT_URL_S3")
	if _, err := s3store.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "no AWS region") {
		t.Fatalf("Open without region or endpoint = %v, want a 'no AWS region' error", err)
	}
	u, _ = url.Parse("s3://" + bucket + "/p?no_such_param=1&region=us-east-1")
	if _, err := s3store.Open(t.Context(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "no_such_param") {
		t.Fatalf("Open with an unknown parameter = %v, want it named", err)
	}
}

// leftovers lists the objects under the prefix of st and the multipart
// uploads under it that were never completed nor aborted.
func leftovers(t *testing.T, st store.Store) []string {
	obj := st.(*store.ObjectStore)
	c := client(t, obj)
	prefix := strings.TrimPrefix(obj.String(), "s3://"+bucket+"/") + "/"
	return testserver.S3Leftovers(t, c, bucket, prefix)
}

func testWrongCredentials(t *testing.T, srv server) {
	const wrong = "wrong-secret-value-3f9a1c"
	t.Setenv("AWS_SECRET_ACCESS_KEY", wrong)
	prefix := storetest.NewPrefix()
	st := open(t, srv.storeURL(bucket, prefix))
	name := "s3://" + bucket + "/" + prefix
	secrets := []string{wrong, srv.secret}
	// A HEAD answer has no body: StatBlob cannot tell which credential is wrong.
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: name, Says: []string{"access denied", "AWS_SECRET_ACCESS_KEY"}, Secrets: secrets, Skip: []string{"StatBlob"}})
	_, err := st.StatBlob(t.Context(), digest.FromBytes(nil))
	storetest.CheckError(t, "StatBlob", err, name, []string{"access denied"}, secrets...)
}

func testUnreachable(t *testing.T) {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))
	st := open(t, fmt.Sprintf("s3://%s/p?endpoint=%s&use_path_style=true&region=us-east-1", bucket, endpoint))
	storetest.CheckAllOps(t, st, storetest.ErrorWant{Store: "s3://" + bucket + "/p", Says: []string{"cannot reach " + endpoint + ": connection refused"},
		Secrets: []string{os.Getenv("AWS_SECRET_ACCESS_KEY")}})
}

// testLatePart fails a multipart upload while its second part is still on
// its way to the server (a proxy holds its end for half a second): the
// client gives up on that part and aborts the upload, then the part lands.
// versitygw then brings the upload back; the store aborts it again, so
// that nothing is left once the part has landed.
func testLatePart(t *testing.T, srv server) {
	proxy := faultproxy.New(t, srv.endpoint)
	proxy.Add(faultproxy.Rule{Method: "PUT", Path: `partNumber=2\b`, Fault: faultproxy.HoldRequest, AfterBytes: 1 << 20, StallFor: 500 * time.Millisecond})
	st := open(t, (server{endpoint: proxy.URL()}).storeURL(bucket, storetest.NewPrefix()))
	held := func() (faultproxy.Request, bool) {
		for _, r := range proxy.Requests() {
			if r.Fault == faultproxy.HoldRequest {
				return r, true
			}
		}
		return faultproxy.Request{}, false
	}
	waitFor := func(what string, ok func() bool) {
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 20 s for %s", what)
			}
		}
	}
	data, d := storetest.RandomBlob(t, 3*cloudblob.DefaultPartSize-1000)
	src := &failAt{r: bytes.NewReader(data), at: 2*cloudblob.DefaultPartSize + 1, wait: func() {
		waitFor("the second part to reach the proxy", func() bool { r, ok := held(); return ok && r.Held })
	}}
	if err := st.PutBlob(t.Context(), d, int64(len(data)), src); err == nil {
		t.Fatal("PutBlob whose source failed succeeded")
	}
	// The server may also refuse the part before its end and close the
	// connection on it (MinIO does for an upload already aborted): the
	// forward then ends with no answer.
	waitFor("the held part's forward to end", func() bool { r, _ := held(); return r.Upstream != 0 || r.Err != "" })
	if r, _ := held(); r.Upstream == 0 {
		t.Logf("the held part got no answer: %s", r.Err)
	}
	if left := leftovers(t, st); len(left) > 0 {
		t.Fatalf("a part that landed after the abort left %s", strings.Join(left, ", "))
	}
	// The listing may not show an upload that a late part brought back
	// (versitygw lists only those it still knows the key of): it is
	// asked for by its ID.
	r, _ := held()
	q, err := url.ParseQuery(r.Path[strings.IndexByte(r.Path, '?')+1:])
	if err != nil || q.Get("uploadId") == "" {
		t.Fatalf("no upload ID in the held part's request %q: %v", r.Path, err)
	}
	obj := st.Bucket().(*cloudblob.Bucket)
	key := strings.TrimPrefix(r.Path[:strings.IndexByte(r.Path, '?')], "/"+bucket+"/")
	_, err = client(t, st).ListParts(t.Context(), &s3.ListPartsInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: aws.String(q.Get("uploadId"))})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "NoSuchUpload" {
		t.Fatalf("after a part (answered %d) landed late, the upload %s of %s is still there: ListParts = %v", r.Upstream, q.Get("uploadId"), obj, err)
	}
}

// failAt reads r, and fails once at bytes were read, after wait.
type failAt struct {
	r    io.Reader
	at   int
	off  int
	wait func()
}

func (f *failAt) Read(p []byte) (int, error) {
	if f.off >= f.at {
		f.wait()
		return 0, errors.New("the source failed")
	}
	p = p[:min(len(p), f.at-f.off)]
	n, err := f.r.Read(p)
	f.off += n
	return n, err
}
