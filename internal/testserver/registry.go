package testserver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// InstallRegistry is the command that installs the distribution registry.
const InstallRegistry = "go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2"

// Registry starts a distribution registry (v3) for t on a free 127.0.0.1
// port, with its storage in a temporary directory, and returns its
// host:port. With user set, it requires basic auth with user and password.
// It starts in about 150 ms; it stops when t ends.
func Registry(t testing.TB, user, password string) string {
	t.Helper()
	bin := Binary(t, "registry", InstallRegistry)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	auth := ""
	if user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth: {htpasswd: {realm: test, path: %s}}\n", htpasswd)
	}
	cfg := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: %s}\n%s",
		filepath.Join(dir, "data"), addr, auth)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Start(t, bin, []string{"serve", cfg}, []string{"OTEL_TRACES_EXPORTER=none"})
	want := 200
	if user != "" {
		want = 401
	}
	p.WaitHTTP(t, "http://"+addr+"/v2/", want)
	return addr
}
