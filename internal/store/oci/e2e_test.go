package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestEngineRoundTrip saves a real tree (nested and empty directories,
// symlinks, modes, old mtimes) to the registry, restores it elsewhere, then
// saves the restored workspace again after a build added files: only the
// new pack and the new index are uploaded. Each step opens its own Store,
// as each Tekton step is its own process.
func TestEngineRoundTrip(t *testing.T) {
	host := registry(t, false)
	repo := newRepo(t)
	ctx := context.Background()

	src := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)

	c := newCounter()
	save, err := engine.Save(ctx, openRepo(t, host, repo, oci.WithTransport(c)), engine.SaveOptions{Key: "go-1", Folders: []string{src}, PackSize: 1 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if save.Skipped || save.NewPacks == 0 || save.UploadedBlobs != save.NewPacks+1 {
		t.Fatalf("first save: %+v", save)
	}
	// The first save of a repository also uploads the times manifest's
	// empty blob, and PUTs the times manifest after the entry's.
	if n := c.count("POST upload"); n != save.UploadedBlobs+1 {
		t.Errorf("the registry received %d uploads, the save reports %d blobs (and the times manifest's empty blob)", n, save.UploadedBlobs)
	}
	if n := c.count("PUT manifest"); n != 2 {
		t.Errorf("%d manifest PUTs, want 2 (the entry, the times)", n)
	}

	ws := filepath.Join(t.TempDir(), "cache")
	res, err := engine.Restore(ctx, openRepo(t, host, repo), engine.RestoreOptions{Key: "go-1", Folders: []string{ws}, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { testtree.Chmod(t, ws) })
	if !res.Fetched || !res.Restored || res.MatchedKey != "go-1" {
		t.Fatalf("restore: %+v", res)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, ws, archive.StateFileName))

	// A build adds a few files; the next save sends them and the index only.
	for _, n := range []string{"new-1", "new-2", "deep/er/new-3"} {
		if err := os.WriteFile(filepath.Join(ws, n), bytes.Repeat([]byte(n), 5000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c2 := newCounter()
	save2, err := engine.Save(ctx, openRepo(t, host, repo, oci.WithTransport(c2)), engine.SaveOptions{Key: "go-2", Folders: []string{ws}, PackSize: 1 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatalf("second Save: %v", err)
	}
	if save2.NewPacks != 1 || save2.ReusedPacks == 0 || save2.UploadedBlobs != 2 {
		t.Errorf("second save: %+v, want 1 new pack, reused packs, 2 blobs", save2)
	}
	if n := c2.count("POST upload"); n != 2 {
		t.Errorf("the registry received %d uploads for the second save, want 2 (one pack, one index)", n)
	}

	// A restore key finds the newest entry; it holds the added files.
	want2 := testtree.Snapshot(t, ws, archive.StateFileName)
	ws2 := filepath.Join(t.TempDir(), "cache")
	res2, err := engine.Restore(ctx, openRepo(t, host, repo), engine.RestoreOptions{Key: "go-3", RestoreKeys: []string{"go-"}, Folders: []string{ws2}, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Restore by prefix: %v", err)
	}
	t.Cleanup(func() { testtree.Chmod(t, ws2) })
	if res2.Fetched || !res2.Restored || res2.MatchedKey != "go-2" {
		t.Fatalf("restore by prefix: %+v", res2)
	}
	testtree.Equal(t, want2, testtree.Snapshot(t, ws2, archive.StateFileName))
}

// TestCraneExportOfSavedEntry: flattening a saved entry as `crane export`
// does gives every non-empty regular file of the saved folder, with its
// content (directories, symlinks and empty files live in the index only).
func TestCraneExportOfSavedEntry(t *testing.T) {
	host := registry(t, false)
	s := openStore(t, host)
	src := t.TempDir()
	testtree.Make(t, src)
	if _, err := engine.Save(context.Background(), s, engine.SaveOptions{Key: "export", Folders: []string{src}, PackSize: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // a t.TempDir
		if err != nil || !d.Type().IsRegular() || d.Name() == archive.StateFileName {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && len(b) > 0 {
			rel, _ := filepath.Rel(src, p)
			want[filepath.ToSlash(rel)] = string(b)
		}
		return err
	})
	img, err := remote.Image(s.Repository().Tag("export"))
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	if got := readTar(t, rc); !equalMaps(got, want) {
		t.Errorf("crane export gives %v, want %v", keys(got), keys(want))
	}
}

// TestRequestsPerPushedBlob counts what a save costs per blob it uploads,
// through the retries every opened store has (so packs go from a spool, as
// in production): the engine's HEAD, then one POST and one PUT that carries
// the bytes. No second HEAD (the store remembers the engine's answer) and no
// PATCH (the upload is monolithic): 3 requests a blob, where go-containerregistry's
// upload took 5 (HEAD, HEAD, POST, PATCH, PUT).
func TestRequestsPerPushedBlob(t *testing.T) {
	host := registry(t, false)
	src := t.TempDir()
	for i := range 6 {
		data, _ := storetest.RandomBlob(t, 200<<10)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := newCounter()
	st := store.WithRetries(openStore(t, host, oci.WithTransport(c)), store.Options{Logf: t.Logf})
	save, err := engine.Save(context.Background(), st, engine.SaveOptions{Key: "k", Folders: []string{src}, PackSize: 256 << 10, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if save.NewPacks < 3 || save.UploadedBlobs != save.NewPacks+1 {
		t.Fatalf("save: %+v, want several packs and the index uploaded", save)
	}
	// The first save of a repository also puts the times manifest's empty blob.
	blobs := save.UploadedBlobs + 1
	got := map[string]int{}
	for _, k := range []string{"HEAD blob", "POST upload", "PATCH upload", "PUT upload", "GET upload"} {
		got[k] = c.count(k)
	}
	want := map[string]int{"HEAD blob": blobs, "POST upload": blobs, "PATCH upload": 0, "PUT upload": blobs, "GET upload": 0}
	if !equalCounts(got, want) {
		t.Errorf("requests for %d blobs: %v, want %v (3 a blob)", blobs, got, want)
	}
	// Every blob is there, whole.
	ref, err := st.GetRef(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(ref.Packs, ref.Index) {
		if info, err := st.StatBlob(context.Background(), d.Digest); err != nil || info.Size != d.Size {
			t.Errorf("pack %s: %+v, %v", d.Digest.Short(), info, err)
		}
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
