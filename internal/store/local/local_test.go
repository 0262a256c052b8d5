package local_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// open opens a store in a new directory of t.
func open(t testing.TB) store.Store {
	s, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: t.TempDir()}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// BenchmarkConformance measures the store operations on a directory.
func BenchmarkConformance(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return open(b) })
}

// TestRestoreKeyCost measures what resolving a restore key of 1,000
// entries costs (docs/BENCHMARKS.md): one listing and a few ref reads.
func TestRestoreKeyCost(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 1,000 entries")
	}
	all, lazy := storetest.RestoreKeyCost(t, store.Checked(store.WithRetries(open(t), store.Options{})), 1000, 8, nil)
	t.Logf("file://, 1,000 entries: reading every candidate %v; lazily %v", all, lazy)
	if lazy.Lists != 1 || lazy.Reads > storetest.MaxLazyReads {
		t.Fatalf("Newest of 1,000 entries cost %v, want 1 listing and at most %d reads", lazy, storetest.MaxLazyReads)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t) }, storetest.Options{Leftovers: func(t *testing.T, s store.Store) []string { return files(t, strings.TrimPrefix(s.String(), "file://")) }})
}

// files lists every file under dir (temporary ones included): what a failed
// or cancelled put left behind in a store that holds nothing else.
func files(t *testing.T, dir string) []string {
	var found []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			found = append(found, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestOpenErrors(t *testing.T) {
	for _, raw := range []string{"file://host/path", "file://", "file:///"} {
		u, _ := url.Parse(raw)
		if _, err := local.Open(context.Background(), u, store.Options{}); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", raw)
		}
	}
}

// TestStaleStagingIsSwept: a save killed while it staged a pack leaves a
// staged file; the next save through the store (any save: each publishes a
// ref) removes it once it is old enough to be dead, and leaves a recent one
// (a save running now) alone.
func TestStaleStagingIsSwept(t *testing.T) {
	dir := t.TempDir()
	staging := filepath.Join(dir, "v1", "staging")
	if err := os.MkdirAll(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	dead, live := filepath.Join(staging, ".tmp-dead"), filepath.Join(staging, ".tmp-live")
	for _, p := range []string{dead, live} {
		if err := os.WriteFile(p, []byte("half a pack"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(dead, old, old); err != nil {
		t.Fatal(err)
	}
	s, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: dir}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A save publishing a ref sweeps, whether or not it staged anything.
	data, d := storetest.RandomBlob(t, 100)
	if err := s.PutBlob(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRef(context.Background(), &store.Ref{Format: format.Version, Key: "k", Index: format.Descriptor{Digest: d, Size: int64(len(data))}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a staged file of a killed save is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a recent staged file (a save running now) was removed: %v", err)
	}
}

// TestNotARegularFile plants a FIFO, a symbolic link and a directory where
// blobs go: reading them is an error at once, never a read that blocks
// (a FIFO without a writer would block forever).
func TestNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	st, err := local.Open(t.Context(), &url.URL{Scheme: "file", Path: dir}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "v1", "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, []byte("x"), 0o644)
	plant := map[string]func(p string) error{
		"a FIFO":             func(p string) error { return unix.Mkfifo(p, 0o644) },
		"a symbolic link":    func(p string) error { return os.Symlink(target, p) },
		"not a regular file": func(p string) error { return os.Mkdir(p, 0o755) },
	}
	for what, mk := range plant {
		t.Run(what, func(t *testing.T) {
			d := digest.FromBytes([]byte(what))
			if err := mk(filepath.Join(blobs, d.Hex())); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				rc, err := st.GetBlob(t.Context(), d)
				if err == nil {
					_, err = io.ReadAll(rc)
					rc.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetBlob of %s: %v, want an error wrapping ErrNotFound", what, err)
				}
				if what != "not a regular file" && !strings.Contains(err.Error(), what) {
					t.Fatalf("GetBlob of %s: %q does not say what is there", what, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("GetBlob of %s blocked", what)
			}
			if _, err := st.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("StatBlob of %s: %v", what, err)
			}
		})
	}
}
