package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

func deleteBlob(t *testing.T, st store.Store, d format.Descriptor) {
	t.Helper()
	if err := st.(store.Deleter).DeleteBlob(context.Background(), d.Digest); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedEntryHeals is review D3: a pack deleted under an entry (a
// bucket lifecycle rule, a registry GC) made every fetch of the key fail
// without trying the restore keys, and every upload skip because the key
// existed.
func TestDamagedEntryHeals(t *testing.T) {
	st := memory.NewStore("t")
	old := t.TempDir()
	os.WriteFile(filepath.Join(old, "f"), []byte("older entry"), 0o644)
	save(t, st, "go-old", old)
	time.Sleep(10 * time.Millisecond) // go-new is the newest under "go-"
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "go-new", src)
	ref, err := st.GetRef(context.Background(), "go-new")
	if err != nil {
		t.Fatal(err)
	}
	deleteBlob(t, st, ref.Packs[0])

	// The exact entry (also the newest under the prefix) is passed over; the
	// intact older one is restored.
	dst := t.TempDir()
	res := restore(t, st, "go-new", []string{"go-"}, dst)
	if !res.Restored || res.Fetched || res.MatchedKey != "go-old" || res.RestoreKey != "go-" {
		t.Fatalf("want a fallback to go-old: %+v", res)
	}
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "entry go-new is damaged") || !strings.Contains(res.Skipped[0], "is missing") {
		t.Fatalf("the damaged entry is not reported: %q", res.Skipped)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "f")); string(got) != "older entry" {
		t.Fatalf("f = %q", got)
	}

	// Without a fallback it is a miss that names no matched entry.
	if res := restore(t, st, "go-new", nil, t.TempDir()); res.Restored || res.MatchedKey != "" || res.Found {
		t.Fatalf("a damaged entry alone: %+v", res)
	}

	// The next upload, without Force, replaces the damaged entry.
	up, err := Save(context.Background(), st, SaveOptions{Key: "go-new", Folders: []string{src}, Logf: t.Logf})
	if err != nil || up.Skipped || !strings.Contains(up.Replaced, "is missing") {
		t.Fatalf("upload over a damaged entry: %+v, %v", up, err)
	}
	want := testtree.Snapshot(t, src, ".tekton-cache-state")
	dst2 := t.TempDir()
	if res := restore(t, st, "go-new", nil, dst2); !res.Fetched {
		t.Fatalf("the replaced entry does not restore: %+v", res)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, dst2, ".tekton-cache-state"))

	// A whole entry is still kept (the check costs stats, not downloads).
	up, err = Save(context.Background(), st, SaveOptions{Key: "go-new", Folders: []string{src}})
	if err != nil || !up.Skipped || !strings.Contains(up.SkipReason, "is whole") {
		t.Fatalf("upload over a whole entry: %+v, %v", up, err)
	}
	// A missing index is damage too.
	ref, _ = st.GetRef(context.Background(), "go-new")
	deleteBlob(t, st, ref.Index)
	if up, err := Save(context.Background(), st, SaveOptions{Key: "go-new", Folders: []string{src}}); err != nil || up.Skipped || !strings.Contains(up.Replaced, "index") {
		t.Fatalf("upload over an entry without index: %+v, %v", up, err)
	}
}

// TestFolderListChangeReplaces is review D4's upload half: an entry saved
// with one folder is replaced by a save with two (it skipped forever).
func TestFolderListChangeReplaces(t *testing.T) {
	st := memory.NewStore("t")
	wd, a, b := twoFolders(t, "a", "b")
	opts := SaveOptions{Key: "k", Folders: []string{a}, WorkDir: wd}
	if _, err := Save(context.Background(), st, opts); err != nil {
		t.Fatal(err)
	}
	opts.Folders = []string{a, b}
	up, err := Save(context.Background(), st, opts)
	if err != nil || up.Skipped || !strings.Contains(up.Replaced, `holds folder(s) ["a"]`) {
		t.Fatalf("save with another folder list: %+v, %v", up, err)
	}
	// The same folders in another order: the entry serves them, kept.
	opts.Folders = []string{b, a}
	if up, err := Save(context.Background(), st, opts); err != nil || !up.Skipped {
		t.Fatalf("save with the folders reordered: %+v, %v", up, err)
	}
}

// TestPlatformDecidesAHit: an entry saved on linux/arm64 is not restored on
// linux/amd64 unless the cache is declared platform-neutral.
func TestPlatformDecidesAHit(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "bin"), []byte("native"), 0o644)
	if _, err := Save(context.Background(), st, SaveOptions{Key: "k", Folders: []string{src}, Platform: "linux/arm64"}); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	res, err := Restore(context.Background(), st, RestoreOptions{Key: "k", Folders: []string{dst}, Platform: "linux/amd64"})
	if err != nil || res.Restored || !strings.Contains(res.MissReason, "saved on linux/arm64, this is linux/amd64") {
		t.Fatalf("cross-platform restore: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "bin")); !os.IsNotExist(err) {
		t.Fatal("the arm64 entry was restored")
	}
	res, err = Restore(context.Background(), st, RestoreOptions{Key: "k", Folders: []string{dst}, Platform: "linux/amd64", AnyPlatform: true})
	if err != nil || !res.Fetched || res.Platform != "linux/arm64" {
		t.Fatalf("platform-neutral restore: %+v, %v", res, err)
	}
	// The amd64 save does not overwrite the arm64 entry under the same key.
	up, err := Save(context.Background(), st, SaveOptions{Key: "k", Folders: []string{src}, Platform: "linux/amd64"})
	if err != nil || !up.Skipped || !strings.Contains(up.SkipReason, "{{os}}-{{arch}}") {
		t.Fatalf("save over another platform's entry: %+v, %v", up, err)
	}
	// Lookup only: found, nothing written.
	empty := t.TempDir()
	res, err = Restore(context.Background(), st, RestoreOptions{Key: "k", Folders: []string{empty}, Platform: "linux/arm64", LookupOnly: true})
	if err != nil || !res.Found || !res.Fetched || res.Restored {
		t.Fatalf("lookup: %+v, %v", res, err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("lookup-only wrote %d entries", len(ents))
	}
}
