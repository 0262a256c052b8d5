package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

func save(t testing.TB, st store.Store, key string, folders ...string) *SaveResult {
	t.Helper()
	return saveWith(t, st, SaveOptions{Key: key, Folders: folders})
}

// saveWith saves with opts, small packs and the test's log.
func saveWith(t testing.TB, st store.Store, opts SaveOptions) *SaveResult {
	t.Helper()
	opts.PackSize, opts.Logf = 1<<20, t.Logf
	res, err := Save(context.Background(), st, opts)
	if err != nil {
		t.Fatalf("Save(%s): %v", opts.Key, err)
	}
	return res
}

func restore(t *testing.T, st store.Store, key string, restoreKeys []string, folders ...string) *RestoreResult {
	t.Helper()
	res, err := Restore(context.Background(), st, RestoreOptions{Key: key, RestoreKeys: restoreKeys, Folders: folders, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Restore(%s): %v", key, err)
	}
	return res
}

func TestRoundTripIsFaithful(t *testing.T) {
	src := t.TempDir()
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)
	st := memory.NewStore("t")
	s := save(t, st, "go-1", src)
	if s.Skipped || s.NewPacks == 0 || s.UploadedBlobs != s.NewPacks+1 {
		t.Fatalf("save result %+v", s)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	r := restore(t, st, "go-1", nil, dst)
	if !r.Fetched || !r.Restored || r.MatchedKey != "go-1" {
		t.Fatalf("restore result %+v", r)
	}
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
	testtree.Chmod(t, dst)
}

func TestSecondSaveOfSameKeyIsSkipped(t *testing.T) {
	src := t.TempDir()
	testtree.Make(t, src)
	st := memory.NewStore("t")
	save(t, st, "k", src)
	s := save(t, st, "k", src)
	if !s.Skipped || !strings.Contains(s.SkipReason, "already exists") {
		t.Fatalf("second save: %+v", s)
	}
	s, err := Save(context.Background(), st, SaveOptions{Key: "k", Folders: []string{src}, Force: true})
	if err != nil || s.Skipped {
		t.Fatalf("forced save: %+v, %v", s, err)
	}
}

func TestMissIsNotAnError(t *testing.T) {
	st := memory.NewStore("t")
	r := restore(t, st, "go-abc", []string{"go-"}, t.TempDir())
	if r.Restored || r.Fetched || !strings.Contains(r.MissReason, "go-abc") {
		t.Fatalf("miss result %+v", r)
	}
}

// TestRestoreKeysAndIncrementalSave walks the usual life of a cache: a
// lock-file change misses the exact key, restores the newest entry of the
// prefix, and the next save sends only what changed.
func TestRestoreKeysAndIncrementalSave(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	// The newer entry is one second newer, whatever the clock's resolution.
	older := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	newer := older.Add(time.Second)
	saveWith(t, st, SaveOptions{Key: "go-old", Folders: []string{src}, Now: func() time.Time { return older }})
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("second\n"), 0o644)
	saveWith(t, st, SaveOptions{Key: "go-newer", Folders: []string{src}, Now: func() time.Time { return newer }})

	ws := filepath.Join(t.TempDir(), "cache")
	r := restore(t, st, "go-new-lock-hash", []string{"python-", "go-"}, ws)
	if r.Fetched || !r.Restored || r.MatchedKey != "go-newer" || !r.Created.Equal(newer) {
		t.Fatalf("restore by prefix: %+v", r)
	}
	// Add a few files, as a build after a lock-file change does.
	for _, n := range []string{"n1", "n2"} {
		os.WriteFile(filepath.Join(ws, n), bytes.Repeat([]byte(n), 10000), 0o644)
	}
	s := save(t, st, "go-new-lock-hash", ws)
	if s.NewPacks != 1 || s.ReusedPacks == 0 || s.UploadedBlobs != 2 {
		t.Fatalf("incremental save sent %d blobs, %d new packs, %d reused: %+v", s.UploadedBlobs, s.NewPacks, s.ReusedPacks, s)
	}
	if s.UploadedBytes > 10000 {
		t.Fatalf("incremental save sent %d bytes for two small files", s.UploadedBytes)
	}
	want := testtree.Snapshot(t, ws, archive.StateFileName)
	dst := t.TempDir()
	restore(t, st, "go-new-lock-hash", nil, dst)
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
}

func TestNoOpSaveUploadsNothing(t *testing.T) {
	st := memory.NewStore("t")
	src := filepath.Join(t.TempDir(), "cache")
	os.Mkdir(src, 0o755)
	testtree.Make(t, src)
	save(t, st, "v1", src)
	ws := filepath.Join(t.TempDir(), "cache")
	restore(t, st, "v1", nil, ws)
	s := save(t, st, "v2", ws)
	if s.UploadedBlobs != 0 || s.NewPacks != 0 || !strings.HasPrefix(s.Base, "state") {
		t.Fatalf("no-op save: %+v", s)
	}
	// Without restore state the base comes from the store (restore keys).
	os.Remove(filepath.Join(ws, archive.StateFileName))
	s, err := Save(context.Background(), st, SaveOptions{Key: "v3", Folders: []string{ws}, BaseKeys: []string{"v"}})
	if err != nil || s.UploadedBlobs != 0 {
		t.Fatalf("no-op save from a store base: %+v, %v", s, err)
	}
}

func TestWarmRestoreWritesOnlyChanges(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "v1", src)
	ws := t.TempDir()
	restore(t, st, "v1", nil, ws)
	os.WriteFile(filepath.Join(ws, "a.txt"), []byte("local change"), 0o644)
	r := restore(t, st, "v1", nil, ws)
	if r.Written != int64(len("hello\n")) || r.Present == 0 {
		t.Fatalf("warm restore wrote %d bytes, kept %d files: %+v", r.Written, r.Present, r)
	}
	if got, _ := os.ReadFile(filepath.Join(ws, "a.txt")); string(got) != "hello\n" {
		t.Fatalf("a.txt = %q after restore", got)
	}
}

// twoFolders makes a working dir with folders a and b, each holding x.
func twoFolders(t *testing.T, inA, inB string) (wd, a, b string) {
	wd = t.TempDir()
	a, b = filepath.Join(wd, "a"), filepath.Join(wd, "b")
	for dir, content := range map[string]string{a: inA, b: inB} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return wd, a, b
}

func TestSeveralFolders(t *testing.T) {
	st := memory.NewStore("t")
	wd, a, b := twoFolders(t, "in a", "in b")
	if _, err := Save(context.Background(), st, SaveOptions{Key: "two", Folders: []string{a, b}, WorkDir: wd}); err != nil {
		t.Fatal(err)
	}
	if ref, _ := st.GetRef(context.Background(), "two"); !slices.Equal(ref.Folders, []string{"a", "b"}) {
		t.Fatalf("the ref records folders %q, want [a b]", ref.Folders)
	}
	// Another workspace, the folders in the other order (review D4): each
	// folder's content lands in its own folder.
	wd2 := t.TempDir()
	ra, rb := filepath.Join(wd2, "a"), filepath.Join(wd2, "b")
	res, err := Restore(context.Background(), st, RestoreOptions{Key: "two", Folders: []string{rb, ra}, WorkDir: wd2})
	if err != nil || !res.Fetched {
		t.Fatalf("swapped restore: %+v, %v", res, err)
	}
	for dir, want := range map[string]string{ra: "in a", rb: "in b"} {
		if got, _ := os.ReadFile(filepath.Join(dir, "x")); string(got) != want {
			t.Errorf("%s/x = %q, want %q", dir, got, want)
		}
	}
	// A folder more: the two restored by name, the new one left alone, and
	// the result is no exact hit (so the upload saves the new folder).
	wd3 := t.TempDir()
	c := filepath.Join(wd3, "c")
	res, err = Restore(context.Background(), st, RestoreOptions{Key: "two", Folders: []string{filepath.Join(wd3, "a"), c, filepath.Join(wd3, "b")}, WorkDir: wd3})
	if err != nil || !res.Restored || res.Fetched || !slices.Equal(res.Extra, []string{"c"}) {
		t.Fatalf("restore with an extra folder: %+v, %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(wd3, "b", "x")); string(got) != "in b" {
		t.Errorf("b/x = %q", got)
	}
	// One folder of two, or folders of other names: a miss that says why.
	for _, folders := range [][]string{{ra}, {filepath.Join(wd2, "p"), filepath.Join(wd2, "q")}} {
		res, err := Restore(context.Background(), st, RestoreOptions{Key: "two", Folders: folders, WorkDir: wd2})
		if err != nil || res.Restored || !strings.Contains(res.MissReason, `holds folder(s) ["a" "b"]`) {
			t.Fatalf("restoring %q: %+v, %v; want a miss naming the folders", folders, res, err)
		}
	}
}

// corruptStore flips a byte in every pack it serves (the middle one, or with
// atEnd the last one: every file then decodes before the digest check fails).
type corruptStore struct {
	store.Store
	packs map[digest.Digest]bool
	atEnd bool
}

// Unwrap implements store.Unwrapper.
func (c *corruptStore) Unwrap() store.Store { return c.Store }

func (c *corruptStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, err := c.Store.GetBlob(ctx, d)
	if err != nil || !c.packs[d] {
		return rc, err
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if c.atEnd {
		data = append(data, 0) // every file decodes; the size and digest check at the end fails
	} else {
		data[len(data)/2] ^= 0x01
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func TestCorruptPackIsNotAHitAndLeavesFolderAsItWas(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	ref, _ := st.GetRef(context.Background(), "k")
	bad := &corruptStore{Store: st, packs: map[digest.Digest]bool{}}
	for _, p := range ref.Packs {
		bad.packs[p.Digest] = true
	}
	dst := t.TempDir()
	os.WriteFile(filepath.Join(dst, "mine"), []byte("user data"), 0o644)
	before := testtree.Snapshot(t, dst)
	res, err := Restore(context.Background(), bad, RestoreOptions{Key: "k", Folders: []string{dst}})
	if err == nil && res.Restored {
		t.Fatalf("restore of a corrupt entry succeeded: %+v", res)
	}
	// Damage is a miss that says so, never a failure of the step nor a hit.
	if err != nil || res.MatchedKey != "" || !strings.Contains(res.MissReason, "entry k is damaged") {
		t.Fatalf("restore of a corrupt pack: %+v, %v; want a miss that names the damage", res, err)
	}
	testtree.Equal(t, before, testtree.Snapshot(t, dst))

	// A folder that did not exist does not exist after a failed restore.
	missing := filepath.Join(t.TempDir(), "never-created")
	if res, err := Restore(context.Background(), bad, RestoreOptions{Key: "k", Folders: []string{missing}}); err != nil || res.Restored {
		t.Fatalf("restore of a corrupt entry into a new folder: %+v, %v; want a miss", res, err)
	}
	if _, err := os.Lstat(missing); !os.IsNotExist(err) {
		t.Fatalf("a failed restore left %s behind: %v", missing, err)
	}

	// Files written under their final names in fresh directories (a cold
	// restore) go too when the digest check fails only at the pack's end.
	bad.atEnd = true
	// A digest mismatch is damage: the entry is passed over, a miss that says so.
	if res, err := Restore(context.Background(), bad, RestoreOptions{Key: "k", Folders: []string{missing}}); err != nil || res.Restored || res.MatchedKey != "" || !strings.Contains(res.MissReason, "entry k is damaged") {
		t.Fatalf("restore of a pack with a byte too many: %+v, %v", res, err)
	}
	if _, err := os.Lstat(missing); !os.IsNotExist(err) {
		t.Fatalf("a failed cold restore left %s behind: %v", missing, err)
	}
	if res, err := Restore(context.Background(), bad, RestoreOptions{Key: "k", Folders: []string{dst}}); err == nil && res.Restored {
		t.Fatal("restore of a pack with a byte too many succeeded")
	}
	testtree.Equal(t, before, testtree.Snapshot(t, dst))
}

func TestInvalidKeyIsRefused(t *testing.T) {
	st := memory.NewStore("t")
	if _, err := Save(context.Background(), st, SaveOptions{Key: "../x", Folders: []string{t.TempDir()}}); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("Save with a bad key: %v", err)
	}
	if _, err := Restore(context.Background(), st, RestoreOptions{Key: "ok", RestoreKeys: []string{"a/b"}, Folders: []string{t.TempDir()}}); !errors.Is(err, store.ErrInvalidKey) {
		t.Fatalf("Restore with a bad restore key: %v", err)
	}
}

// TestLargeFileIsNotTruncated saves a file larger than a pack and than the
// in-memory spool, so it spills to a temporary file, and checks every byte.
func TestLargeFileIsNotTruncated(t *testing.T) {
	src := t.TempDir()
	f, _ := os.Create(filepath.Join(src, "big"))
	chunk := make([]byte, 1<<20)
	for i := range 40 {
		for j := range chunk {
			chunk[j] = byte(i*7 + j*13 + j/251)
		}
		f.Write(chunk)
	}
	f.Close()
	want := testtree.Snapshot(t, src)
	st := memory.NewStore("t")
	save(t, st, "big", src)
	dst := t.TempDir()
	restore(t, st, "big", nil, dst)
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
}

// TestFileChangingDuringSaveFails: a file that grew after the walk must not
// be stored with a size the index does not state.
func TestFileChangingDuringSaveFails(t *testing.T) {
	src := t.TempDir()
	p := filepath.Join(src, "growing")
	os.WriteFile(p, []byte("short"), 0o644)
	x, _, err := archive.Walk([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("much longer now"), 0o644)
	e := &x.Entries[0]
	err = archive.WritePack(io.Discard, 0, []archive.PackFile{{Entry: e, Name: e.Path, Source: p}})
	if err == nil || !strings.Contains(err.Error(), "changed while being saved") {
		t.Fatalf("WritePack of a file that grew: %v", err)
	}
}

// foreignStore answers GetRef of one key as a store does when another
// tool wrote it.
type foreignStore struct {
	store.Store
	key string
}

// Unwrap implements store.Unwrapper.
func (f *foreignStore) Unwrap() store.Store { return f.Store }

func (f *foreignStore) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	if key == f.key {
		return nil, fmt.Errorf("tag %s is a plain container image (1 layer, gzip): %w: %w", key, store.ErrForeign, store.ErrNotFound)
	}
	return f.Store.GetRef(ctx, key)
}

func TestMissReasonSaysWhatAnotherToolWrote(t *testing.T) {
	st := &foreignStore{Store: memory.NewStore("t"), key: "go-abc"}
	r := restore(t, st, "go-abc", nil, t.TempDir())
	if r.Restored || !strings.Contains(r.MissReason, "plain container image") {
		t.Fatalf("miss reason %q does not say what the key holds", r.MissReason)
	}
}

// TestDirectoryStoreWritesPacksInPlace: a file:// store takes packs
// straight from the compressor (no spool); nothing is left staged.
func TestDirectoryStoreWritesPacksInPlace(t *testing.T) {
	dir := t.TempDir()
	st, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: dir}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)
	s := save(t, st, "k", src)
	if s.NewPacks < 2 || s.UploadedBlobs != s.NewPacks+1 {
		t.Fatalf("save: %+v", s)
	}
	// The same content under another key, without the restore state: every
	// file is read and packed again, the packs come out identical, and the
	// staged copies are dropped because the store has them.
	os.Remove(filepath.Join(src, archive.StateFileName))
	s = save(t, st, "k2", src)
	if s.NewPacks == 0 || s.ReusedFiles != 0 {
		t.Fatalf("second save did not pack again: %+v", s)
	}
	if s.UploadedBlobs != 0 {
		t.Fatalf("second save of the same tree sent %d blobs", s.UploadedBlobs)
	}
	staging, _ := os.ReadDir(filepath.Join(dir, "v1", "staging"))
	if len(staging) != 0 {
		t.Fatalf("%d staged files left behind", len(staging))
	}
	dst := t.TempDir()
	restore(t, st, "k", nil, dst)
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
}

// TestNoOpSaveWritesNothingInTheWorkspace: a save right after a restore,
// with nothing changed, leaves the restore state as it is (no write in the
// folder at all), and the state still proves nothing it should not: a file
// then replaced with the same size and mtime is read and saved anew.
func TestNoOpSaveWritesNothingInTheWorkspace(t *testing.T) {
	st := memory.NewStore("t")
	src := filepath.Join(t.TempDir(), "c")
	testtree.Make(t, src)
	save(t, st, "k1", src)
	dst := filepath.Join(t.TempDir(), "c")
	restore(t, st, "k1", nil, dst)
	statePath := filepath.Join(dst, archive.StateFileName)
	before, err := os.Stat(statePath)
	if err != nil {
		t.Fatal(err)
	}
	res := save(t, st, "k2", dst)
	if res.UploadedBytes != 0 || res.HashedFiles != 0 {
		t.Fatalf("no-op save sent %d bytes, hashed %d files", res.UploadedBytes, res.HashedFiles)
	}
	after, err := os.Stat(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("a no-op save rewrote the restore state")
	}
	// A same-size, same-mtime replacement is still seen.
	var victim string
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if fi, _ := d.Info(); victim == "" && fi != nil && fi.Mode().IsRegular() && fi.Size() > 4 && d.Name() != archive.StateFileName {
			victim = p
		}
		return nil
	})
	fi, _ := os.Stat(victim)
	data, _ := os.ReadFile(victim)
	data[0] ^= 0xff
	os.Remove(victim)
	os.WriteFile(victim, data, fi.Mode().Perm())
	os.Chtimes(victim, fi.ModTime(), fi.ModTime())
	want := testtree.Snapshot(t, dst, archive.StateFileName)
	save(t, st, "k3", dst)
	fresh := filepath.Join(t.TempDir(), "c")
	restore(t, st, "k3", nil, fresh)
	testtree.Equal(t, want, testtree.Snapshot(t, fresh, archive.StateFileName))
}

// TestSaveRefusesMoreEntriesThanTheCap: a save whose folders hold more
// entries than a restore would read (CACHE_MAX_INDEX_ENTRIES) uploads
// nothing and says so, instead of an entry no restore takes.
func TestSaveRefusesMoreEntriesThanTheCap(t *testing.T) {
	src := t.TempDir()
	testtree.Make(t, src)
	defer archive.SetMaxIndexEntries(archive.MaxIndexEntries())
	archive.SetMaxIndexEntries(3)
	st := memory.NewStore("t")
	_, err := Save(context.Background(), st, SaveOptions{Key: "k", Folders: []string{src}, Logf: t.Logf})
	if err == nil || !strings.Contains(err.Error(), "more than an entry may (3; CACHE_MAX_INDEX_ENTRIES") {
		t.Fatalf("Save past the cap: %v", err)
	}
	if _, err := st.GetRef(context.Background(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a ref was written: %v", err)
	}
}
