// Package enginetest checks a store end to end through the engine: save a
// real tree, restore it, save incrementally, and kill a save half way. Every
// backend's tests call SaveRestore against its real server.
package enginetest

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// SaveRestore saves a real tree into st, restores it into a new folder
// and compares; saves again after a change and checks that only the new
// content travels; then kills a save halfway and checks that the previous
// entry is intact and the killed one absent.
func SaveRestore(t *testing.T, st store.Store) {
	ctx := t.Context()
	save := func(ctx context.Context, st store.Store, key, dir string) (*engine.SaveResult, error) {
		return engine.Save(ctx, st, engine.SaveOptions{Key: key, Folders: []string{dir}, PackSize: 1 << 20, Logf: t.Logf})
	}
	dst := RoundTrip(t, st, "go-1")

	newFile := make([]byte, 200_000)
	rand.Read(newFile)
	if err := os.WriteFile(filepath.Join(dst, "new.bin"), newFile, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := save(ctx, st, "go-2", dst)
	if err != nil {
		t.Fatalf("second Save: %v", err)
	}
	if s2.NewPacks != 1 || s2.UploadedBlobs != 2 || s2.UploadedBytes > 300_000 {
		t.Fatalf("second save sent %d blobs (%d bytes), %d new packs; want 1 pack + the index: %+v", s2.UploadedBlobs, s2.UploadedBytes, s2.NewPacks, s2)
	}

	big := make([]byte, 4<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(dst, "killed-save.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	kctx, kill := context.WithCancel(ctx)
	defer kill()
	k := &killer{Store: st, kill: kill}
	k.after.Store(1 << 20)
	if _, err := save(kctx, k, "go-3", dst); err == nil {
		t.Fatal("killed Save succeeded")
	}
	if _, err := st.GetRef(ctx, "go-3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRef of the killed save = %v, want not found", err)
	}
	want2 := testtree.Snapshot(t, dst, archive.StateFileName, "killed-save.bin")
	dst2 := filepath.Join(t.TempDir(), "again")
	r, err := engine.Restore(ctx, st, engine.RestoreOptions{Key: "go-3", RestoreKeys: []string{"go-"}, Folders: []string{dst2}, Logf: t.Logf})
	if err != nil || r.MatchedKey != "go-2" {
		t.Fatalf("Restore after a killed save = %+v, %v; want go-2", r, err)
	}
	testtree.Equal(t, want2, testtree.Snapshot(t, dst2, archive.StateFileName))
}

// RoundTrip saves a new test tree (testtree.Make) under key into st,
// restores it into a new folder, compares the two and returns the
// restored folder.
func RoundTrip(t *testing.T, st store.Store, key string) (restored string) {
	t.Helper()
	ctx := t.Context()
	src := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)
	if _, err := engine.Save(ctx, st, engine.SaveOptions{Key: key, Folders: []string{src}, PackSize: 1 << 20, Logf: t.Logf}); err != nil {
		t.Fatalf("Save %s: %v", key, err)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	r, err := engine.Restore(ctx, st, engine.RestoreOptions{Key: key, Folders: []string{dst}, Logf: t.Logf})
	if err != nil || !r.Fetched || !r.Restored {
		t.Fatalf("Restore %s = %+v, %v", key, r, err)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
	return dst
}

// killer cancels the save's context once blob uploads have sent after
// bytes, as a killed step would stop mid-upload. It keeps the store's path:
// a store that stages blobs is killed while a staged pack is written.
type killer struct {
	store.Store
	kill  func()
	after atomic.Int64 // bytes left before the kill; uploads run in parallel
}

// Unwrap implements store.Unwrapper.
func (k *killer) Unwrap() store.Store { return k.Store }

func (k *killer) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	return k.Store.PutBlob(ctx, d, size, &killReader{r: r, k: k})
}

// StageBlob implements store.BlobStager when the store does.
func (k *killer) StageBlob(ctx context.Context) (store.StagedBlob, error) {
	sb, err := store.StageBlob(ctx, k.Store)
	if err != nil {
		return nil, err
	}
	return &killStaged{StagedBlob: sb, k: k}, nil
}

type killStaged struct {
	store.StagedBlob
	k *killer
}

func (s *killStaged) Write(p []byte) (int, error) {
	n, err := s.StagedBlob.Write(p)
	s.k.count(n)
	return n, err
}

func (k *killer) count(n int) {
	if k.after.Add(-int64(n)) <= 0 {
		k.kill()
	}
}

type killReader struct {
	r io.Reader
	k *killer
}

func (kr *killReader) Read(p []byte) (int, error) {
	n, err := kr.r.Read(p)
	kr.k.count(n)
	return n, err
}
