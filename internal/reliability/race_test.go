package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// writers is how many saves race.
const writers = 4

// racingWriters checks what concurrent writers leave in st.
func racingWriters(t *testing.T, st store.Store) {
	t.Run("SameKey", func(t *testing.T) { sameKey(t, st) })
	t.Run("SharedPacks", func(t *testing.T) { sharedPacks(t, st) })
	t.Run("RestoreWhilePublishing", func(t *testing.T) { restoreWhilePublishing(t, st) })
}

// sameKey: N saves of one key with different contents leave one complete
// entry, equal to exactly one of the inputs.
func sameKey(t *testing.T, st store.Store) {
	ctx := t.Context()
	inputs := make([]map[string]string, writers)
	dirs := make([]string, writers)
	for i := range writers {
		dirs[i] = tree(t, map[string]string{"writer.txt": fmt.Sprint(i)})
		inputs[i] = files(t, dirs[i])
	}
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() { errs[i] = save(ctx, st, "race", dirs[i], true, t.Logf) })
	}
	wg.Wait()
	saved := 0
	for i, err := range errs {
		if err != nil {
			t.Logf("writer %d: %v", i, err)
		} else {
			saved++
		}
	}
	if saved == 0 {
		t.Fatal("no concurrent save succeeded")
	}
	dst := filepath.Join(t.TempDir(), "restored")
	res, err := restore(ctx, st, "race", dst, t.Logf)
	if err != nil || !res.Restored {
		t.Fatalf("restoring the raced key: %+v, %v", res, err)
	}
	got := files(t, dst)
	match := -1
	for i, in := range inputs {
		if maps.Equal(got, in) {
			match = i
		}
	}
	if match < 0 {
		t.Fatalf("the raced key restores to none of the %d inputs (%d files)", writers, len(got))
	}
	if errs[match] != nil {
		t.Fatalf("the raced key holds writer %d's entry, whose save failed", match)
	}
	t.Logf("%d of %d saves succeeded; writer %d won", saved, writers, match)
}

// sharedPacks: saves of different keys built on one base entry (so they
// reuse its packs, and two of them upload the same new file) never corrupt
// each other.
func sharedPacks(t *testing.T, st store.Store) {
	ctx := t.Context()
	base := tree(t, map[string]string{"base.txt": "shared"})
	if err := save(ctx, st, "shared-base", base, true, t.Logf); err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, writers)
	want := make([]map[string]string, writers)
	for i := range writers {
		dirs[i] = filepath.Join(t.TempDir(), "cache")
		if _, err := restore(ctx, st, "shared-base", dirs[i], t.Logf); err != nil {
			t.Fatal(err)
		}
		extra := fmt.Sprintf("writer %d", i)
		if i < 2 {
			extra = "the same new file in two writers"
		}
		if err := os.WriteFile(filepath.Join(dirs[i], "new.txt"), []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
		want[i] = files(t, dirs[i])
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() { errs[i] = save(ctx, st, fmt.Sprintf("shared-%d", i), dirs[i], true, t.Logf) })
	}
	wg.Wait()
	for i := range writers {
		if errs[i] != nil {
			t.Fatalf("save %d: %v", i, errs[i])
		}
	}
	for i := range writers {
		dst := filepath.Join(t.TempDir(), "restored")
		res, err := restore(ctx, st, fmt.Sprintf("shared-%d", i), dst, t.Logf)
		if err != nil || !res.Restored {
			t.Fatalf("restore %d: %+v, %v", i, res, err)
		}
		if !maps.Equal(files(t, dst), want[i]) {
			t.Fatalf("shared-%d restores with other files", i)
		}
	}
	dst := filepath.Join(t.TempDir(), "base-again")
	if _, err := restore(ctx, st, "shared-base", dst, t.Logf); err != nil || !maps.Equal(files(t, dst), files(t, base)) {
		t.Fatalf("the base entry changed: %v", err)
	}
}

// restoreWhilePublishing: restores that run while a save of the same key
// publishes see the old entry or the new one, never a mix or a failure.
func restoreWhilePublishing(t *testing.T, st store.Store) {
	ctx := t.Context()
	oldDir := tree(t, map[string]string{"version.txt": "old"})
	newDir := tree(t, map[string]string{"version.txt": "new"})
	old, neu := files(t, oldDir), files(t, newDir)
	if err := save(ctx, st, "flip", oldDir, true, t.Logf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- save(ctx, st, "flip", newDir, true, t.Logf) }()
	var saveErr error
	seen := map[string]int{}
	for finished := false; !finished; {
		select {
		case saveErr = <-done:
			finished = true
		default:
		}
		dst := filepath.Join(t.TempDir(), "restored")
		res, err := restore(ctx, st, "flip", dst, t.Logf)
		if err != nil || !res.Restored {
			t.Fatalf("a restore during the publish failed: %+v, %v", res, err)
		}
		switch got := files(t, dst); {
		case maps.Equal(got, old):
			seen["old"]++
		case maps.Equal(got, neu):
			seen["new"]++
		default:
			t.Fatal("a restore during the publish saw neither the old entry nor the new one")
		}
	}
	if saveErr != nil {
		t.Fatal(saveErr)
	}
	if seen["new"] == 0 {
		t.Fatalf("the last restore, after the save, did not see the new entry: %v", seen)
	}
	t.Logf("restores during the publish: %v", seen)
}

// fileStore checks the directory store: objects that are not regular
// files (planted where a pack, the index or a ref goes) fail a restore at
// once instead of blocking on them; then the racing writers.
func fileStore(t *testing.T) {
	root := t.TempDir()
	logs := &logCounter{t: t}
	st := openStore(t, "file://"+root, false, logs)
	ctx := t.Context()
	src := tree(t, nil)
	want := files(t, src)
	if err := save(ctx, st, "entry", src, false, t.Logf); err != nil {
		t.Fatal(err)
	}
	ref, err := st.GetRef(ctx, "entry")
	if err != nil {
		t.Fatal(err)
	}
	blobPath := func(hex string) string { return filepath.Join(root, "v1", "blobs", "sha256", hex) }
	refPath := filepath.Join(root, "v1", "refs", "entry")
	plants := []struct {
		name string
		mk   func(p string) error
	}{
		{"a FIFO", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"a symbolic link", func(p string) error { return os.Symlink("/dev/zero", p) }},
		{"a directory", func(p string) error { return os.Mkdir(p, 0o755) }},
	}
	targets := []struct{ phase, path string }{
		{"ref lookup", refPath},
		{"index fetch", blobPath(ref.Index.Digest.Hex())},
		{"pack transfer", blobPath(ref.Packs[0].Digest.Hex())},
	}
	for _, tg := range targets {
		for _, pl := range plants {
			t.Run(tg.phase+"/"+pl.name, func(t *testing.T) {
				saved := tg.path + ".saved"
				if err := os.Rename(tg.path, saved); err != nil {
					t.Fatal(err)
				}
				defer func() {
					os.RemoveAll(tg.path)
					if err := os.Rename(saved, tg.path); err != nil {
						t.Fatal(err)
					}
				}()
				if err := pl.mk(tg.path); err != nil {
					t.Fatal(err)
				}
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				defer cancel()
				start := time.Now()
				outcome := restoreOutcome(t, octx, st, want)
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("took %v: a read blocked", d)
				}
				record(row{"file:// (directory)", tg.phase, pl.name + " in place of the object", outcome})
			})
		}
	}
	// With the objects back, the entry restores.
	dst := filepath.Join(t.TempDir(), "again")
	if res, err := restore(ctx, st, "entry", dst, t.Logf); err != nil || !res.Restored || !maps.Equal(files(t, dst), want) {
		t.Fatalf("restore after the plants: %+v, %v", res, err)
	}
	if _, err := st.StatBlob(ctx, ref.Packs[0].Digest); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	t.Run("RacingWriters", func(t *testing.T) { racingWriters(t, st) })
}
