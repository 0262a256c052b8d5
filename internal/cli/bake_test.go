package cli

import (
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestBake runs cache bake from a directory and from a cache entry's
// folder, and checks its output, results and exit codes.
func TestBake(t *testing.T) {
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	reg := strings.TrimPrefix(s.URL, "http://")
	base, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(reg+"/base:1", name.Insecure)
	if err := remote.Write(tag, base); err != nil {
		t.Fatal(err)
	}
	_, folder := workspace(t)
	storeDir := filepath.Join(t.TempDir(), "store")
	if r := cache(t, "upload", "--store", "file://"+storeDir, "--key", "go-1", "--folder", folder, "--strict"); r.code != 0 {
		t.Fatalf("upload: %+v", r)
	}
	res := filepath.Join(t.TempDir(), "results")
	r := cache(t, "bake", "--base", reg+"/base:1", "--insecure", "--results-dir", res,
		"--layer", folder+":/go/pkg/mod:mtime=fixed",
		"--layer", "entry:file://"+storeDir+"/go-1#go:/var/cache/go-build",
		"--env", "GOMODCACHE=/go/pkg/mod", "--env", "GOPRIVATE=a.example,b.example",
		"--tag", reg+"/ci/go:nightly-{{date}},"+reg+"/ci/go:nightly")
	if r.code != 0 {
		t.Fatalf("bake: %+v", r)
	}
	digest := readResult(t, res, "digest")
	image := reg + "/ci/go@" + digest
	if strings.TrimSpace(r.stdout) != image || readResult(t, res, "image") != image || readResult(t, res, "status") != "baked" {
		t.Errorf("stdout %q, results image %q status %q: want %s", r.stdout, readResult(t, res, "image"), readResult(t, res, "status"), image)
	}
	if readResult(t, res, "layers") != "2" || readResult(t, res, "pushed-blobs") != "3" {
		t.Errorf("layers %s, pushed-blobs %s: want 2 layers and 3 blobs (2 layers, a config)", readResult(t, res, "layers"), readResult(t, res, "pushed-blobs"))
	}
	wantTag := reg + "/ci/go:nightly-" + time.Now().UTC().Format("20060102")
	if !strings.Contains(readResult(t, res, "tags"), wantTag) {
		t.Errorf("tags %q, want %s", readResult(t, res, "tags"), wantTag)
	}
	img, err := remote.Image(mustRef(t, reg+"/ci/go:nightly"))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if env := strings.Join(cf.Config.Env, " "); !strings.Contains(env, "GOPRIVATE=a.example,b.example") || !strings.Contains(env, "GOMODCACHE=/go/pkg/mod") {
		t.Errorf("env %q", cf.Config.Env)
	}
	// Baked again with nothing changed: the same digest, nothing pushed.
	r = cache(t, "bake", "--base", reg+"/base:1", "--insecure", "--output", "json",
		"--layer", folder+":/go/pkg/mod:mtime=fixed",
		"--layer", "entry:file://"+storeDir+"/go-1#0:/var/cache/go-build",
		"--env", "GOMODCACHE=/go/pkg/mod", "--env", "GOPRIVATE=a.example,b.example",
		"--tag", reg+"/ci/go:nightly-{{date}},"+reg+"/ci/go:nightly")
	if r.code != 0 || !strings.Contains(r.stdout, `"digest":"`+digest+`"`) || !strings.Contains(r.stdout, `"pushed-blobs":0`) {
		t.Errorf("rebake: %+v", r)
	}
	testtree.Snapshot(t, folder) // the folder is untouched (and still readable)

	for _, c := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"no base", []string{"--layer", folder + ":/x", "--tag", reg + "/a:b"}, 2, "--base"},
		{"no dest", []string{"--base", reg + "/base:1", "--layer", folder, "--tag", reg + "/a:b"}, 2, "SRC:DEST"},
		{"not a dir", []string{"--base", reg + "/base:1", "--layer", "/nonexistent:/x", "--tag", reg + "/a:b"}, 2, "not a directory"},
		{"under root", []string{"--base", reg + "/base:1", "--layer", folder + ":/root/.cache", "--tag", reg + "/a:b"}, 2, "/root"},
		{"bad option", []string{"--base", reg + "/base:1", "--layer", folder + ":/x:mtime=old", "--tag", reg + "/a:b"}, 2, "mtime=fixed"},
		{"no folder", []string{"--base", reg + "/base:1", "--layer", "entry:file://" + storeDir + "/go-1#7:/x", "--tag", reg + "/a:b"}, 2, "folders are go"},
		{"no entry", []string{"--base", reg + "/base:1", "--layer", "entry:file://" + storeDir + "/go-2#0:/x", "--tag", reg + "/a:b"}, 1, "no entry"},
		{"zstd docker", []string{"--base", reg + "/base:1", "--layer", folder + ":/x", "--tag", reg + "/a:b", "--compression", "zstd"}, 2, "OCI base"},
		{"no registry", []string{"--base", "127.0.0.1:" + strconv.Itoa(testserver.FreePort(t)) + "/base:1", "--layer", folder + ":/x", "--tag", reg + "/a:b"}, 1, "reading the base"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := filepath.Join(t.TempDir(), "results")
			r := cache(t, append([]string{"bake", "--insecure", "--results-dir", res}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if last := lines[len(lines)-1]; r.code != c.code || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, c.says) {
				t.Errorf("exit %d, stderr %q: want exit %d and an error line saying %q", r.code, r.stderr, c.code, c.says)
			}
			if readResult(t, res, "status") != "error" || !strings.Contains(readResult(t, res, "error"), c.says) {
				t.Errorf("results: status %q error %q", readResult(t, res, "status"), readResult(t, res, "error"))
			}
		})
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
