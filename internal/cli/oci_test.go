package cli

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestOCIRegistry runs fetch and upload against a real registry that
// requires basic auth: credentials from DOCKER_CONFIG work, wrong ones give
// one warning line naming the registry and the cause, never the password.
func TestOCIRegistry(t *testing.T) {
	const user, pass = "ciuser", "hunter2-Secret"
	addr := testserver.Registry(t, user, pass)
	wd, folder := workspace(t)
	res := t.TempDir()
	src := "oci://" + addr + "/team/cache:go-{{hash}}"
	args := func(verb string, extra ...string) []string {
		flag := "--source"
		if verb == "upload" {
			flag = "--target"
		}
		return append([]string{verb, flag, src, "--workingdir", wd, "--folder", folder, "--results-dir", res}, extra...)
	}
	dockerConfig := func(p string) string {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + p))
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, addr, auth)), 0o600)
		return dir
	}

	t.Setenv("DOCKER_CONFIG", dockerConfig("wrong-password"))
	for _, verb := range []string{"fetch", "upload"} {
		r := cache(t, args(verb)...)
		if r.code != 0 || !strings.Contains(r.stderr, "warning:") || !strings.Contains(r.stderr, addr) || !strings.Contains(strings.ToLower(r.stderr), "unauthorized") {
			t.Fatalf("%s with wrong credentials: want one warning naming %s and 'unauthorized': %+v", verb, addr, r)
		}
		if strings.Contains(r.stderr, "wrong-password") || strings.Contains(r.stderr, pass) {
			t.Fatalf("%s printed a password: %s", verb, r.stderr)
		}
		if n := strings.Count(r.stderr, "warning:"); n != 1 {
			t.Fatalf("%s printed %d warnings", verb, n)
		}
		if r := cache(t, args(verb, "--strict")...); r.code != 1 {
			t.Fatalf("%s --strict with wrong credentials: exit %d, want 1", verb, r.code)
		}
	}
	if readResult(t, res, "fetched") != "false" {
		t.Fatal("fetched is not false after a failed fetch")
	}

	t.Setenv("DOCKER_CONFIG", dockerConfig(pass))
	want := testtree.Snapshot(t, folder)
	if r := cache(t, args("upload")...); r.code != 0 || !strings.Contains(r.stderr, "saved go-") {
		t.Fatalf("upload: %+v", r)
	}
	os.RemoveAll(folder)
	if r := cache(t, args("fetch")...); r.code != 0 || readResult(t, res, "fetched") != "true" {
		t.Fatalf("fetch: %+v", r)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, folder, ".tekton-cache-state"))
}
