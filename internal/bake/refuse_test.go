package bake_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/bake"
)

// pushImage pushes one image of platform p with media type mt.
func pushImage(t *testing.T, reg, repo string, p v1.Platform, mt types.MediaType) string {
	t.Helper()
	ref := reg + "/" + repo + ":1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, platformImage(t, p, mt, baseEnv)); err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestBakeRefuses: what cannot work is refused with a line that says
// what to do, before anything is pushed.
func TestBakeRefuses(t *testing.T) {
	reg := registries[0].start(t)
	ociBase := pushImage(t, reg, "base/oci", amd64, types.OCIManifestSchema1)
	dockerBase := pushImage(t, reg, "base/docker", amd64, types.DockerManifestSchema2)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a/b": "x"}, 0o644)
	wh := t.TempDir()
	writeTree(t, wh, map[string]string{"pkg/.wh.foo": "x"}, 0o644)
	out := t.TempDir()
	if err := os.Symlink("../../etc/passwd", filepath.Join(out, "esc")); err != nil {
		t.Fatal(err)
	}
	abs := t.TempDir()
	if err := os.Symlink("/etc/passwd", filepath.Join(abs, "abs")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		modify func(*bake.Options)
		is     error
		says   string
	}{
		{"under /root", func(o *bake.Options) { o.Layers[0].Dest = "/root/.cache/go-build" }, bake.ErrConfig, "/root"},
		{"relative dest", func(o *bake.Options) { o.Layers[0].Dest = "go/pkg/mod" }, bake.ErrConfig, "absolute"},
		{"whiteout dest", func(o *bake.Options) { o.Layers[0].Dest = "/go/.wh.x" }, bake.ErrWhiteout, ".wh."},
		{"whiteout file", func(o *bake.Options) { o.Layers[0].Dir = wh }, bake.ErrWhiteout, "pkg/.wh.foo"},
		{"link out", func(o *bake.Options) { o.Layers[0].Dir = out }, bake.ErrUnsafeLink, "esc"},
		{"absolute link", func(o *bake.Options) { o.Layers[0].Dir = abs }, bake.ErrUnsafeLink, "absolute"},
		{"zstd on docker", func(o *bake.Options) { o.Base, o.Compression = dockerBase, bake.Zstd }, bake.ErrConfig, "OCI base"},
		{"missing platform", func(o *bake.Options) { o.Layers[0].Platform = "linux/s390x" }, bake.ErrConfig, "linux/s390x"},
		{"bad env", func(o *bake.Options) { o.Env = []string{"NOEQUALS"} }, bake.ErrConfig, "KEY=VALUE"},
		{"bad tag", func(o *bake.Options) { o.Tags = []string{"UPPER/case:x y"} }, bake.ErrConfig, "--tag"},
		{"no tag", func(o *bake.Options) { o.Tags = nil }, bake.ErrConfig, "--tag"},
		{"small split", func(o *bake.Options) { o.SplitSize = 10 }, bake.ErrConfig, "--split-size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			counter := &blobCounter{rt: http.DefaultTransport}
			o := bake.Options{
				Base: ociBase, Layers: []bake.Layer{{Dir: dir, Dest: "/go/pkg/mod"}},
				Tags: []string{reg + "/ci/refused:x"}, Insecure: true, Transport: counter,
			}
			c.modify(&o)
			_, err := bake.Bake(context.Background(), o)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v: want one line wrapping %v that says %q", err, c.is, c.says)
			}
			if n := counter.blobs.Load(); n != 0 {
				t.Errorf("%d blob(s) pushed before the refusal", n)
			}
		})
	}
}

// TestBakeSingleImageZstdSplit: a single-platform OCI base gets zstd
// layers, a directory larger than --split-size several layers, none over
// it, holding every file once.
func TestBakeSingleImageZstdSplit(t *testing.T) {
	reg := registries[0].start(t)
	base := pushImage(t, reg, "base/oci", amd64, types.OCIManifestSchema1)
	dir := t.TempDir()
	files := map[string]string{}
	for i := range 10 {
		files[filepath.Join(string(rune('a'+i)), "f")] = strings.Repeat(string(rune('a'+i)), 300<<10)
	}
	writeTree(t, dir, files, 0o600)
	res, err := bake.Bake(context.Background(), bake.Options{
		Base: base, Layers: []bake.Layer{{Dir: dir, Dest: "/opt/cache", Platform: "linux/amd64"}},
		Tags: []string{reg + "/ci/split:x"}, Insecure: true, Compression: bake.Zstd, SplitSize: 1 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 4 || res.Files != 10 || len(res.Platforms) != 1 || res.Platforms[0] != "linux/amd64" {
		t.Fatalf("%d layers of %d files for %v: want 4 layers (3 files of 300 KiB in each 1 MiB), 10 files, linux/amd64", res.Layers, res.Files, res.Platforms)
	}
	ref, _ := name.ParseReference(res.Ref, name.Insecure)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	seen := map[string]int{}
	for _, l := range layers[2:] {
		mt, _ := l.MediaType()
		if mt != types.OCILayerZStd {
			t.Errorf("media type %s, want %s", mt, types.OCILayerZStd)
		}
		var tarBytes int64
		for _, h := range layerHeaders(t, l) {
			seen[h.Name]++
			tarBytes += 512 + (h.Size+511)/512*512
			if h.Typeflag == '0' && h.Mode != 0o660 {
				t.Errorf("%s: mode %o, want 0660 (0600 with the group's equal to the owner's)", h.Name, h.Mode)
			}
		}
		if tarBytes > 1<<20 {
			t.Errorf("a layer of %d tar bytes, over --split-size", tarBytes)
		}
	}
	for p := range files {
		if seen["opt/cache/"+p] != 1 {
			t.Errorf("%s is in %d layers, want 1", p, seen["opt/cache/"+p])
		}
	}
}
