package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tekton-cache/tekton-cache/internal/testenv"
)

// Install commands of the object-store servers.
const (
	InstallMinIO   = "go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
	InstallFakeGCS = "go install github.com/fsouza/fake-gcs-server@v1.56.1"
	InstallAzurite = "hack/install-cloud-tools.sh (npm install --prefix .tools/azurite azurite@3.35.0)"
)

// Azurite's well-known development account.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// MinIO starts MinIO on a free port with root credentials user and secret
// and returns its endpoint, http://127.0.0.1:PORT.
func MinIO(t testing.TB, user, secret string) string {
	t.Helper()
	bin := Binary(t, "minio", InstallMinIO)
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p := Start(t, bin, []string{"server", t.TempDir(), "--address", addr, "--quiet"},
		[]string{"MINIO_ROOT_USER=" + user, "MINIO_ROOT_PASSWORD=" + secret, "MINIO_BROWSER=off"})
	p.WaitHTTP(t, "http://"+addr+"/minio/health/ready", 200)
	return "http://" + addr
}

// UntilMinIOReady calls create (a CreateBucket) until it succeeds: MinIO
// may answer 503 "not initialized" for a moment after its health check
// passes, and the SDK client makes one attempt per request. Any other
// error, or 20 s of 503s, fails t.
func UntilMinIOReady(t testing.TB, create func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := create()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "StatusCode: 503") || time.Now().After(deadline) {
			t.Fatalf("creating bucket: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FakeGCS starts fake-gcs-server (in memory) on a free port and returns its
// host:port. publicHost, when set, is the host:port it puts in upload URLs
// (a proxy in front of it); else its own.
func FakeGCS(t testing.TB, publicHost string) string {
	t.Helper()
	bin := Binary(t, "fake-gcs-server", InstallFakeGCS)
	port := FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	if publicHost == "" {
		publicHost = host
	}
	p := Start(t, bin, []string{"-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
		"-public-host", publicHost, "-external-url", "http://" + publicHost, "-backend", "memory", "-data", t.TempDir(), "-log-level", "warn"}, nil)
	p.WaitHTTP(t, "http://"+host+"/_internal/healthcheck", 200)
	return host
}

// Azurite starts Azurite's blob service on a free port and returns its
// endpoint, http://127.0.0.1:PORT/devstoreaccount1.
func Azurite(t testing.TB) string {
	t.Helper()
	bin := AzuriteBinary(t)
	port := FreePort(t)
	p := Start(t, bin, []string{"--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port),
		"--location", t.TempDir(), "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"}, nil)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/%s", port, AzuriteAccount)
	p.WaitHTTP(t, endpoint+"?comp=list", 0)
	return endpoint
}

// AzuriteConnString is the connection string of Azurite's account at
// endpoint, with key.
func AzuriteConnString(endpoint, key string) string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;", AzuriteAccount, key, endpoint)
}

// AzuriteBinary finds azurite-blob where hack/install-cloud-tools.sh puts
// it ($CACHE_TOOLS_DIR or the repository's .tools), or on PATH.
func AzuriteBinary(t testing.TB) string {
	t.Helper()
	rel := filepath.Join("azurite", "node_modules", ".bin", "azurite-blob")
	var dirs []string
	if d := os.Getenv("CACHE_TOOLS_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if root, err := repoRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, ".tools"))
	}
	for _, d := range dirs {
		if p := filepath.Join(d, rel); isFile(p) {
			return p
		}
	}
	if _, err := exec.LookPath("node"); err != nil {
		testenv.SkipUnless(t, false, "node is not installed: Azurite needs Node.js 20")
	}
	return Binary(t, "azurite-blob", InstallAzurite)
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// IsolateAWS keeps the developer's AWS profile, region, endpoint and
// files out of t, and gives it the credentials user and secret (of a MinIO
// that MinIO started).
func IsolateAWS(t testing.TB, user, secret string) {
	t.Helper()
	for _, k := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	for k, f := range map[string]string{"AWS_CONFIG_FILE": "config", "AWS_SHARED_CREDENTIALS_FILE": "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv(k, filepath.Join(dir, f))
	}
	t.Setenv("AWS_ACCESS_KEY_ID", user)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
}

// S3Leftovers lists the objects under prefix in bucket and the multipart
// uploads under it that were never completed nor aborted: what a failed
// put must not leave.
func S3Leftovers(t testing.TB, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var left []string
	objects, err := c.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("ListObjectsV2: %v", err)
	}
	for _, o := range objects.Contents {
		left = append(left, "object "+aws.ToString(o.Key))
	}
	uploads, err := c.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	for _, up := range uploads.Uploads {
		left = append(left, "incomplete multipart upload "+aws.ToString(up.Key))
	}
	return left
}

// MinIOBucket starts MinIO (as MinIO does) with the credentials user and
// secret in the environment of t (IsolateAWS), creates bucket, and returns
// the s3:// store URL of a prefix in it.
func MinIOBucket(t testing.TB, user, secret, bucket string) func(prefix string) string {
	t.Helper()
	endpoint := MinIO(t, user, secret)
	IsolateAWS(t, user, secret)
	c := s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: user, SecretAccessKey: secret}, nil
		}),
	})
	UntilMinIOReady(t, func() error {
		_, err := c.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		return err
	})
	return func(prefix string) string {
		return fmt.Sprintf("s3://%s/%s?endpoint=%s&use_path_style=true&disable_https=true&region=us-east-1", bucket, prefix, endpoint)
	}
}
