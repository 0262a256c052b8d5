package bake_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/bake"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// blobCounter counts, on the client's side, the blob uploads a registry
// accepted, independently of bake's own count.
type blobCounter struct {
	rt    http.RoundTripper
	blobs atomic.Int64
}

func (c *blobCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/") && resp.StatusCode/100 == 2 {
		c.blobs.Add(1)
	}
	return resp, err
}

// registries are the two registries every image test runs against.
var registries = []struct {
	name  string
	start func(t *testing.T) string
}{
	{"ggcr", func(t *testing.T) string {
		s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}},
	{"distribution", func(t *testing.T) string { return testserver.Registry(t, "", "") }},
}

// platformImage is a random image whose config says platform p, with env.
func platformImage(t *testing.T, p v1.Platform, mt types.MediaType, env []string) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Env = env
	cf.Created = v1.Time{Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, mt)
	if mt == types.OCIManifestSchema1 {
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img
}

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

var baseEnv = []string{"PATH=/usr/local/go/bin:/usr/bin", "GOCACHE=/root/.cache/go-build", "GOLANG_VERSION=1.26.8"}

// pushBase pushes an OCI index of amd64 and arm64 images and a BuildKit
// attestation entry, and returns its reference by tag.
func pushBase(t *testing.T, reg string) string {
	t.Helper()
	att, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: platformImage(t, amd64, types.OCIManifestSchema1, baseEnv), Descriptor: v1.Descriptor{Platform: &amd64}},
		mutate.IndexAddendum{Add: platformImage(t, arm64, types.OCIManifestSchema1, baseEnv), Descriptor: v1.Descriptor{Platform: &arm64}},
		mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"},
		}},
	)
	ref := reg + "/base/golang:1.26"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	return ref
}

// writeTree makes files under dir: path -> content ("/" suffix: a directory).
func writeTree(t *testing.T, dir string, files map[string]string, mode os.FileMode) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// caches makes a module cache (read-only directories, as Go leaves them)
// and a build cache per platform, with old mtimes.
func caches(t *testing.T) (mod, buildAMD, buildARM string, mtime time.Time) {
	t.Helper()
	root := t.TempDir()
	mod = filepath.Join(root, "mod")
	writeTree(t, mod, map[string]string{
		"cache/download/example.com/dep/@v/v1.0.0.zip": "zip bytes",
		"cache/download/example.com/dep/@v/v1.0.0.mod": "module example.com/dep\n",
		"example.com/dep@v1.0.0/dep.go":                "package dep\n",
		"example.com/dep@v1.0.0/sub/empty.txt":         "",
	}, 0o444)
	if err := os.Symlink("dep.go", filepath.Join(mod, "example.com/dep@v1.0.0/link.go")); err != nil {
		t.Fatal(err)
	}
	// The module cache's root is an emptyDir's (0777): others lose w.
	if err := os.Chmod(mod, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(mod, "example.com/dep@v1.0.0"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(mod, "example.com/dep@v1.0.0"), 0o755) })
	mtime = time.Date(2026, 11, 30, 3, 4, 5, 0, time.UTC)
	buildAMD, buildARM = filepath.Join(root, "build-amd64"), filepath.Join(root, "build-arm64")
	for _, b := range []string{buildAMD, buildARM} {
		writeTree(t, b, map[string]string{
			"README":         "This directory holds cached build artifacts from the Go build system.\n",
			"trim.txt":       "1764000000\n",
			"0a/0a01-a":      "action " + filepath.Base(b),
			"ff/ff02-d":      "output " + filepath.Base(b),
			"ff/ff03-d-long": strings.Repeat("x", 3000),
		}, 0o644)
		if err := filepath.Walk(b, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, mtime, mtime)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return mod, buildAMD, buildARM, mtime
}

func bakeOptions(base, target string, mod, buildAMD, buildARM string, tr http.RoundTripper) bake.Options {
	return bake.Options{
		Base: base,
		Layers: []bake.Layer{
			{Dir: mod, Dest: "/go/pkg/mod", FixedMTime: true},
			{Dir: buildAMD, Dest: "/var/cache/go-build", Platform: "linux/amd64"},
			{Dir: buildARM, Dest: "/var/cache/go-build", Platform: "linux/arm64"},
		},
		Env:       []string{"GOCACHE=/var/cache/go-build", "GOMODCACHE=/go/pkg/mod", "GOFLAGS=-modcacherw", "PATH=/opt/tools/bin:${PATH}"},
		Tags:      []string{target + ":nightly-20261202", target + ":nightly"},
		Insecure:  true,
		Transport: tr,
		Tool:      "tekton-cache test",
	}
}

// readTar calls fn with each entry of the tar stream r.
func readTar(t *testing.T, r io.Reader, fn func(*tar.Header, io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(h, tr)
	}
}

// layerHeaders reads a layer's tar headers.
func layerHeaders(t *testing.T, l v1.Layer) []*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []*tar.Header
	readTar(t, rc, func(h *tar.Header, _ io.Reader) { out = append(out, h) })
	return out
}

func TestBakeIndex(t *testing.T) {
	for _, r := range registries {
		t.Run(r.name, func(t *testing.T) {
			reg := r.start(t)
			base := pushBase(t, reg)
			mod, buildAMD, buildARM, mtime := caches(t)
			counter := &blobCounter{rt: http.DefaultTransport}
			o := bakeOptions(base, reg+"/ci/go", mod, buildAMD, buildARM, counter)
			res, err := bake.Bake(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.PushedBlobs == 0 || int64(res.PushedBlobs) != counter.blobs.Load() {
				t.Errorf("bake says %d blobs pushed, the registry took %d", res.PushedBlobs, counter.blobs.Load())
			}
			// 3 new layers (one shared) and 2 configs.
			if res.Layers != 3 || counter.blobs.Load() != 5 {
				t.Errorf("layers %d, blobs pushed %d: want 3 layers and 5 blobs (3 layers, 2 configs)", res.Layers, counter.blobs.Load())
			}
			checkIndex(t, reg, res, base, mtime)

			// The same bake again: same digest, no blob pushed.
			counter2 := &blobCounter{rt: http.DefaultTransport}
			res2, err := bake.Bake(context.Background(), bakeOptions(base, reg+"/ci/go", mod, buildAMD, buildARM, counter2))
			if err != nil {
				t.Fatal(err)
			}
			if res2.Digest != res.Digest {
				t.Errorf("rebake with nothing changed: digest %s, was %s", res2.Digest, res.Digest)
			}
			if counter2.blobs.Load() != 0 || res2.PushedBlobs != 0 {
				t.Errorf("rebake with nothing changed pushed %d blob(s) (bake says %d)", counter2.blobs.Load(), res2.PushedBlobs)
			}

			// A changed build cache on one platform: one layer and one config.
			if err := os.WriteFile(filepath.Join(buildAMD, "0a", "0a04-d"), []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			counter3 := &blobCounter{rt: http.DefaultTransport}
			res3, err := bake.Bake(context.Background(), bakeOptions(base, reg+"/ci/go", mod, buildAMD, buildARM, counter3))
			if err != nil {
				t.Fatal(err)
			}
			if res3.Digest == res.Digest || counter3.blobs.Load() != 2 {
				t.Errorf("one platform's build cache changed: digest changed %v, %d blob(s) pushed, want 2", res3.Digest != res.Digest, counter3.blobs.Load())
			}
		})
	}
}

// checkIndex checks what TestBakeIndex pushed: the index, each image's
// config and layers, and every new layer's headers.
func checkIndex(t *testing.T, reg string, res *bake.Result, base string, mtime time.Time) {
	t.Helper()
	for _, tag := range []string{"nightly-20261202", "nightly"} {
		ref, err := name.ParseReference(reg+"/ci/go:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		d, err := remote.Head(ref)
		if err != nil {
			t.Fatal(err)
		}
		if d.Digest.String() != res.Digest {
			t.Errorf("tag %s is %s, bake says %s", tag, d.Digest, res.Digest)
		}
	}
	ref, err := name.ParseReference(res.Ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index %s with %d manifests, want an OCI index of 2 (the attestation dropped)", im.MediaType, len(im.Manifests))
	}
	baseRef, _ := name.ParseReference(base, name.Insecure)
	baseDesc, err := remote.Head(baseRef)
	if err != nil {
		t.Fatal(err)
	}
	if got := im.Annotations["org.opencontainers.image.base.digest"]; got != baseDesc.Digest.String() {
		t.Errorf("base digest annotation %q, want %s", got, baseDesc.Digest)
	}
	var shared []v1.Hash
	var gocache []v1.Hash
	for i, d := range im.Manifests {
		want := []v1.Platform{amd64, arm64}[i]
		if d.Platform == nil || !d.Platform.Equals(want) {
			t.Errorf("manifest %d: platform %v, want %v", i, d.Platform, want)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		wantEnv := []string{"PATH=/opt/tools/bin:/usr/local/go/bin:/usr/bin", "GOCACHE=/var/cache/go-build", "GOLANG_VERSION=1.26.8", "GOMODCACHE=/go/pkg/mod", "GOFLAGS=-modcacherw"}
		if !slices.Equal(cf.Config.Env, wantEnv) {
			t.Errorf("%s env %q, want %q", want.Architecture, cf.Config.Env, wantEnv)
		}
		if cf.OS != want.OS || cf.Architecture != want.Architecture {
			t.Errorf("config platform %s/%s, want %v", cf.OS, cf.Architecture, want)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != 4 || len(cf.RootFS.DiffIDs) != 4 || len(cf.History) < 2 {
			t.Fatalf("%d layers, %d diff IDs, %d history entries: want 2 of the base's and 2 new", len(layers), len(cf.RootFS.DiffIDs), len(cf.History))
		}
		for j, l := range layers[2:] {
			mt, _ := l.MediaType()
			if mt != types.OCILayer {
				t.Errorf("layer %d: media type %s, want %s", j+2, mt, types.OCILayer)
			}
			dg, _ := l.Digest()
			diff, _ := l.DiffID()
			if diff != cf.RootFS.DiffIDs[j+2] {
				t.Errorf("layer %d: diff ID %s, config says %s", j+2, diff, cf.RootFS.DiffIDs[j+2])
			}
			if j == 0 {
				shared = append(shared, dg)
			} else {
				gocache = append(gocache, dg)
			}
			checkHeaders(t, layerHeaders(t, l), j == 0, mtime)
		}
	}
	if len(shared) != 2 || shared[0] != shared[1] {
		t.Errorf("module layer digests %v: want one layer shared by both platforms", shared)
	}
	if len(gocache) != 2 || gocache[0] == gocache[1] {
		t.Errorf("build cache layer digests %v: want one per platform", gocache)
	}
}

// checkHeaders checks a new layer's entries: owner 0:0 without names,
// group permissions equal to the owner's, directories group-writable, no
// whiteout, parents before children, and mtimes (fixed for the module
// cache, the files' own for the build cache).
func checkHeaders(t *testing.T, hs []*tar.Header, modCache bool, mtime time.Time) {
	t.Helper()
	if len(hs) == 0 {
		t.Fatal("an empty layer")
	}
	dest := "var/cache/go-build/"
	if modCache {
		dest = "go/pkg/mod/"
	}
	if hs[0].Name != dest || hs[0].Typeflag != tar.TypeDir {
		t.Errorf("first entry %q, want the directory %s", hs[0].Name, dest)
	}
	seen := map[string]bool{}
	for _, h := range hs {
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 without names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !strings.HasPrefix(h.Name, dest) {
			t.Errorf("%s is outside %s", h.Name, dest)
		}
		for _, c := range strings.Split(strings.TrimSuffix(h.Name, "/"), "/") {
			if strings.HasPrefix(c, ".wh.") {
				t.Errorf("%s: a whiteout", h.Name)
			}
		}
		if parent := filepath.Dir(strings.TrimSuffix(h.Name, "/")) + "/"; h.Name != dest && !seen[parent] {
			t.Errorf("%s comes before its parent %s", h.Name, parent)
		}
		seen[h.Name] = true
		owner, group := (h.Mode>>6)&7, (h.Mode>>3)&7
		switch h.Typeflag {
		case tar.TypeDir:
			if group != owner|2 || h.Mode&^0o775 != 0 {
				t.Errorf("directory %s: mode %o, want group = owner + w, others not writing", h.Name, h.Mode)
			}
		case tar.TypeReg:
			if group != owner || h.Mode&^0o775 != 0 {
				t.Errorf("file %s: mode %o, want group = owner, others not writing", h.Name, h.Mode)
			}
		case tar.TypeSymlink:
			if h.Linkname != "dep.go" {
				t.Errorf("symlink %s -> %s", h.Name, h.Linkname)
			}
		default:
			t.Errorf("%s: type %c", h.Name, h.Typeflag)
		}
		if !modCache && !h.ModTime.Equal(mtime) {
			t.Errorf("build cache %s: mtime %s, want the file's %s (Go trims entries by mtime)", h.Name, h.ModTime, mtime)
		}
		if modCache && !h.ModTime.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("module cache %s: mtime %s, want the fixed creation time", h.Name, h.ModTime)
		}
	}
	if modCache {
		for _, want := range []string{"go/pkg/mod/example.com/dep@v1.0.0/", "go/pkg/mod/example.com/dep@v1.0.0/dep.go", "go/pkg/mod/example.com/dep@v1.0.0/link.go", "go/pkg/mod/example.com/dep@v1.0.0/sub/empty.txt"} {
			if !seen[want] {
				t.Errorf("module layer lacks %s", want)
			}
		}
	}
}
