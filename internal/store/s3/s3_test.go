package s3store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tekton-cache/tekton-cache/internal/digest"
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

func startMinIO(t *testing.T) server {
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

func testServer(t *testing.T, srv server) {
	isolateAWS(t, srv.user, srv.secret)
	createBucket(t, srv, bucket)
	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store { return open(t, srv.storeURL(bucket, storetest.NewPrefix())) },
			storetest.Options{LargeSize: 20 << 20})
	})
	t.Run("EndpointAloneIsEnough", func(t *testing.T) { testEndpointDefaults(t, srv) })
	t.Run("FailedMultipartPutLeavesNoParts", func(t *testing.T) { testFailedMultipart(t, srv) })
	t.Run("WrongCredentials", func(t *testing.T) { testWrongCredentials(t, srv) })
	t.Run("MissingBucket", func(t *testing.T) { testMissingBucket(t, srv) })
	t.Run("UnreachableEndpoint", func(t *testing.T) { testUnreachable(t) })
	t.Run("SaveRestore", func(t *testing.T) { testSaveRestore(t, open(t, srv.storeURL(bucket, storetest.NewPrefix()))) })
}

func (s server) storeURL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&use_path_style=true&disable_https=true&region=us-east-1", bucket, prefix, s.endpoint)
}

func open(t *testing.T, raw string) *store.ObjectStore {
	return storetest.OpenObjectStore(t, s3store.Open, raw)
}

// isolateAWS keeps the developer's ~/.aws, instance metadata and AWS_*
// settings out of the tests, and sets the server's credentials.
func isolateAWS(t *testing.T, user, secret string) {
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
func client(t *testing.T, st *store.ObjectStore) *s3.Client {
	var c *s3.Client
	if !st.Bucket().(*cloudblob.Bucket).Blob().As(&c) {
		t.Fatal("no *s3.Client behind the bucket")
	}
	return c
}

func createBucket(t *testing.T, srv server, name string) {
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

// cancelAfter cancels its context once n bytes were read.
type cancelAfter struct {
	r      *bytes.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	p = p[:min(len(p), c.n)]
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// testFailedMultipart cancels, then corrupts, uploads that already sent
// parts: neither may leave the object nor an incomplete multipart upload.
func testFailedMultipart(t *testing.T, srv server) {
	st := open(t, srv.storeURL(bucket, storetest.NewPrefix()))
	data, d := storetest.RandomBlob(t, 30<<20)

	ctx, cancel := context.WithCancel(t.Context())
	err := st.PutBlob(ctx, d, int64(len(data)), &cancelAfter{r: bytes.NewReader(data), n: 20 << 20, cancel: cancel})
	cancel()
	if err == nil {
		t.Fatal("cancelled PutBlob succeeded")
	}
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if err := st.PutBlob(t.Context(), d, int64(len(bad)), bytes.NewReader(bad)); err == nil {
		t.Fatal("PutBlob of corrupt bytes succeeded")
	}
	if _, err := st.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StatBlob after failed puts = %v, want not found", err)
	}
	out, err := client(t, st).ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	for _, up := range out.Uploads {
		if strings.HasSuffix(aws.ToString(up.Key), d.Hex()) {
			t.Errorf("incomplete multipart upload left behind: %s", aws.ToString(up.Key))
		}
	}
}

// checkAllOps runs each store operation and checks its error.
func checkAllOps(t *testing.T, st store.Store, storeName string, wants []string, secrets ...string) {
	t.Helper()
	data := make([]byte, 1000)
	rand.Read(data)
	d := digest.FromBytes(data)
	_, err := st.GetRef(t.Context(), "some-key")
	storetest.CheckError(t, "GetRef", err, storeName, wants, secrets...)
	err = st.PutBlob(t.Context(), d, int64(len(data)), bytes.NewReader(data))
	storetest.CheckError(t, "PutBlob", err, storeName, wants, secrets...)
	_, err = st.ListRefs(t.Context(), "some")
	storetest.CheckError(t, "ListRefs", err, storeName, wants, secrets...)
}

func testWrongCredentials(t *testing.T, srv server) {
	const wrong = "wrong-secret-value-3f9a1c"
	t.Setenv("AWS_SECRET_ACCESS_KEY", wrong)
	prefix := storetest.NewPrefix()
	st := open(t, srv.storeURL(bucket, prefix))
	name := "s3://" + bucket + "/" + prefix
	checkAllOps(t, st, name, []string{"access denied", "AWS_SECRET_ACCESS_KEY"}, wrong, srv.secret)
	_, err := st.StatBlob(t.Context(), digest.FromBytes(nil))
	storetest.CheckError(t, "StatBlob", err, name, []string{"access denied"}, wrong, srv.secret)
}

func testMissingBucket(t *testing.T, srv server) {
	st := open(t, srv.storeURL("no-such-bucket-here", "p"))
	checkAllOps(t, st, "s3://no-such-bucket-here/p", []string{`bucket "no-such-bucket-here" does not exist`}, srv.secret)
}

func testUnreachable(t *testing.T) {
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", testserver.FreePort(t))
	st := open(t, fmt.Sprintf("s3://%s/p?endpoint=%s&use_path_style=true&region=us-east-1", bucket, endpoint))
	checkAllOps(t, st, "s3://"+bucket+"/p", []string{"cannot reach " + endpoint + ": connection refused"}, os.Getenv("AWS_SECRET_ACCESS_KEY"))
}
