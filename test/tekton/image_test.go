package tekton

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/tektoncd/pipeline/pkg/apis/pipeline/v1beta1"

	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// pushBase pushes a tiny base image (an /etc/passwd with the nonroot user)
// for ko to build on, since this machine cannot pull one from the internet,
// and returns its reference by digest.
func pushBase(t testing.TB, reg string) string {
	t.Helper()
	layer, err := crane.Layer(map[string][]byte{
		"etc/passwd": []byte("root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &ggcrv1.ConfigFile{
		OS: "linux", Architecture: runtime.GOARCH,
		Config: ggcrv1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg+"/base:test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing the base image: %v", err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return reg + "/base@" + d.String()
}

// TestImage builds the image with ko and pushes it to a local registry
// (KO_DOCKER_REPO=127.0.0.1:PORT/tekton-cache), exports the image's
// filesystem and runs `cache version` from it; then renders the release
// (hack/release.sh: one file per StepAction, and both in release.yaml) and
// validates it, with the image pinned by digest.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and pushes an image with ko")
	}
	ko := testserver.Binary(t, "ko", "hack/install-tekton-tools.sh")
	root := repoRoot(t)
	reg := testserver.Registry(t, "", "")
	repo := reg + "/tekton-cache"
	env := append(os.Environ(),
		"KO_DOCKER_REPO="+repo,
		"KO_DEFAULTBASEIMAGE="+pushBase(t, reg),
		"VERSION=v0.0.0-imagetest",
	)
	platform := "--platform=linux/" + runtime.GOARCH

	cmd := exec.Command(ko, "build", "--base-import-paths", "--sbom=none", platform, "./cmd/cache")
	cmd.Dir, cmd.Env, cmd.Stderr = root, env, testWriter{t}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ko build: %v", err)
	}
	image := strings.TrimSpace(string(out))
	if !strings.HasPrefix(image, repo+"/cache@sha256:") {
		t.Fatalf("ko build printed %q, want %s/cache@sha256:...", image, repo)
	}
	t.Logf("built %s", image)

	// The image's filesystem holds /ko-app/cache, and it runs.
	bin := extractFile(t, image, strings.TrimPrefix(ImageBinary, "/"))
	got, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "v0.0.0-imagetest" {
		t.Fatalf("cache version from the image: %q, %v; want v0.0.0-imagetest", got, err)
	}

	// The release (make release): one single-document file per StepAction,
	// for the http and git resolvers, and release.yaml with both.
	dist := t.TempDir()
	rel := exec.Command("sh", "hack/release.sh", dist)
	rel.Dir, rel.Stderr = root, testWriter{t}
	rel.Env = append(env, "KO="+ko, "KO_FLAGS=--sbom=none "+platform)
	if err := rel.Run(); err != nil {
		t.Fatalf("hack/release.sh: %v", err)
	}
	var objs []Object
	for _, f := range []string{"cache-fetch.yaml", "cache-upload.yaml", "release.yaml"} {
		data, err := os.ReadFile(filepath.Join(dist, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(f, strings.NewReader(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		if f == "release.yaml" {
			want = 2
		}
		if len(got) != want {
			t.Fatalf("%s has %d objects, want %d", f, len(got), want)
		}
		if f != "release.yaml" && got[0].Obj.(*v1beta1.StepAction).Name+".yaml" != f {
			t.Errorf("%s holds %s", f, got[0])
		}
		objs = append(objs, got...)
	}
	for _, o := range objs {
		if err := Validate(context.Background(), o.Obj); err != nil {
			t.Errorf("%s: %v", o, err)
		}
		if msgs, _ := LintScripts(o.Obj); len(msgs) > 0 {
			t.Errorf("%s: %v", o, msgs)
		}
		sa, ok := o.Obj.(*v1beta1.StepAction)
		if !ok {
			t.Fatalf("%s is not a StepAction", o)
		}
		if !strings.HasPrefix(sa.Spec.Image, repo+"/cache@sha256:") {
			t.Errorf("%s: image %q, want %s/cache pinned by digest", o, sa.Spec.Image, repo)
		}
		if sa.Spec.Image != image {
			// Same sources, same digest (ko builds reproducibly), unless the
			// working tree changed between the two builds.
			t.Logf("%s: the release pins %s, ko build gave %s", o, sa.Spec.Image, image)
		}
	}
	// What the release pins is in the registry, and runs.
	sa := objs[0].Obj.(*v1beta1.StepAction)
	bin = extractFile(t, sa.Spec.Image, strings.TrimPrefix(ImageBinary, "/"))
	if got, err := exec.Command(bin, "version").CombinedOutput(); err != nil || strings.TrimSpace(string(got)) != "v0.0.0-imagetest" {
		t.Fatalf("cache version from the release's image: %q, %v", got, err)
	}
}

// extractFile exports the image's flattened filesystem (as crane export
// does) and writes the file at path into a temp dir, executable.
func extractFile(t testing.TB, image, path string) string {
	t.Helper()
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", image, err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s has no %s", image, path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "/") != path || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Mode&0o111 == 0 {
			t.Errorf("%s in the image is not executable (mode %o)", path, h.Mode)
		}
		out := filepath.Join(t.TempDir(), filepath.Base(path))
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return out
	}
}
