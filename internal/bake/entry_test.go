package bake_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/bake"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// layerFiles reads the new layers of the image at ref: name -> header
// and content.
func layerFiles(t *testing.T, ref string, from int) map[string]string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range layers[from:] {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		readTar(t, rc, func(h *tar.Header, r io.Reader) {
			b, _ := io.ReadAll(r)
			out[h.Name] = strings.Join([]string{string(h.Typeflag), h.FileInfo().Mode().Perm().String(), h.ModTime.String(), h.Linkname, string(b)}, "|")
		})
		rc.Close()
	}
	return out
}

// corrupting flips a byte of every blob it reads.
type corrupting struct{ store.BlobStore }

func (c corrupting) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, err := c.BlobStore.GetBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	b[len(b)/2] ^= 1
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestBakeEntry: a layer from a cache entry's folder (its packs streamed
// from the store) holds what a layer from the folder itself holds, and a
// damaged pack fails the bake.
func TestBakeEntry(t *testing.T) {
	reg := registries[0].start(t)
	base := pushImage(t, reg, "base/oci", amd64, types.OCIManifestSchema1)
	mod, buildAMD, _, _ := caches(t)
	st := memory.NewStore("mem")
	ctx := context.Background()
	if _, err := engine.Save(ctx, st, engine.SaveOptions{Key: "go-1", Folders: []string{buildAMD, mod}, PackSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	ref, err := st.GetRef(ctx, "go-1")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Load(ctx, st, ref)
	if err != nil {
		t.Fatal(err)
	}
	bakeOne := func(l bake.Layer, tag string) (*bake.Result, error) {
		return bake.Bake(ctx, bake.Options{Base: base, Layers: []bake.Layer{l}, Tags: []string{reg + "/ci/entry:" + tag}, Insecure: true})
	}
	for root, dir := range []string{buildAMD, mod} {
		dest := []string{"/var/cache/go-build", "/go/pkg/mod"}[root]
		fromDir, err := bakeOne(bake.Layer{Dir: dir, Dest: dest}, "dir")
		if err != nil {
			t.Fatal(err)
		}
		fromEntry, err := bakeOne(bake.Layer{Entry: &bake.Entry{Name: "go-1", Blobs: st, Index: e.Index, Root: root}, Dest: dest}, "entry")
		if err != nil {
			t.Fatal(err)
		}
		want, got := layerFiles(t, fromDir.Ref, 2), layerFiles(t, fromEntry.Ref, 2)
		// The folder's own header: the entry has no mode or time for it.
		delete(want, strings.TrimPrefix(dest, "/")+"/")
		delete(got, strings.TrimPrefix(dest, "/")+"/")
		if len(got) != len(want) || len(got) < 5 {
			t.Errorf("root %d: %d entries from the entry, %d from the folder", root, len(got), len(want))
		}
		for n, w := range want {
			if got[n] != w {
				t.Errorf("root %d: %s from the entry is %q, from the folder %q", root, n, got[n], w)
			}
		}
	}
	_, err = bakeOne(bake.Layer{Entry: &bake.Entry{Name: "go-1", Blobs: corrupting{st}, Index: e.Index, Root: 0}, Dest: "/var/cache/go-build"}, "bad")
	if !errors.Is(err, digest.ErrMismatch) && !errors.Is(err, archive.ErrCorrupt) {
		t.Errorf("a damaged pack: %v, want a digest mismatch or corruption", err)
	}
	_, err = bakeOne(bake.Layer{Entry: &bake.Entry{Name: "go-1", Blobs: st, Index: e.Index, Root: 2}, Dest: "/x"}, "bad")
	if err == nil || !strings.Contains(err.Error(), "no folder #2") {
		t.Errorf("root 2 of 2 folders: %v", err)
	}
	if _, err := os.Stat(filepath.Join(buildAMD, "trim.txt")); err != nil {
		t.Fatal(err)
	}
}
