package testserver

import (
	"fmt"
	"testing"
)

// S3 is a running S3-compatible server.
type S3 struct {
	Name     string
	Endpoint string // http://127.0.0.1:PORT
	User     string
	Secret   string
}

// MinIO starts MinIO for t on a free 127.0.0.1 port, with its data in a
// temporary directory and no bucket; it stops when t ends.
func MinIO(t testing.TB) S3 {
	t.Helper()
	bin := Binary(t, "minio", "go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c")
	port := FreePort(t)
	s := S3{Name: "minio", Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), User: "tcminioadmin", Secret: "tc-minio-secret-8d2f"}
	p := Start(t, bin, []string{"server", t.TempDir(), "--address", fmt.Sprintf("127.0.0.1:%d", port), "--quiet"},
		[]string{"MINIO_ROOT_USER=" + s.User, "MINIO_ROOT_PASSWORD=" + s.Secret, "MINIO_BROWSER=off"})
	p.WaitHTTP(t, s.Endpoint+"/minio/health/ready", 200)
	return s
}

// FakeGCS starts fake-gcs-server for t on a free 127.0.0.1 port, in memory,
// and returns its host:port; it stops when t ends.
func FakeGCS(t testing.TB) string {
	t.Helper()
	bin := Binary(t, "fake-gcs-server", "go install github.com/fsouza/fake-gcs-server@v1.56.1")
	port := FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	p := Start(t, bin, []string{"-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
		"-public-host", host, "-backend", "memory", "-data", t.TempDir(), "-log-level", "warn"}, nil)
	p.WaitHTTP(t, "http://"+host+"/_internal/healthcheck", 200)
	return host
}
