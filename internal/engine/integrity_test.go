package engine

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// Point 3 of issue 10: never write outside the folder, and roll back
// completely.

// dirStore opens a file:// store in a new directory and returns both.
func dirStore(t *testing.T) (store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	st, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: dir}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st, dir
}

// outsideDir makes a directory outside every folder with a file, an empty
// file and a subdirectory, all with old mtimes, and returns it with its
// snapshot. unchanged fails t if anything in it changed.
func outsideDir(t *testing.T) (dir string, unchanged func(t *testing.T)) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "outside")
	for p, data := range map[string]string{"victim": "outside data\n", "empty": "", "sub/deeper": "more\n"} {
		p = filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testtree.Touch(t, dir, testtree.Old)
	fi, _ := os.Lstat(dir)
	before := testtree.Snapshot(t, dir)
	return dir, func(t *testing.T) {
		t.Helper()
		testtree.Equal(t, before, testtree.Snapshot(t, dir))
		if now, _ := os.Lstat(dir); now.Mode() != fi.Mode() || !now.ModTime().Equal(fi.ModTime()) {
			t.Fatalf("%s itself changed: %v %v, was %v %v", dir, now.Mode(), now.ModTime(), fi.Mode(), fi.ModTime())
		}
	}
}

func tryRestore(st store.Store, key string, folders ...string) (*RestoreResult, error) {
	return Restore(context.Background(), st, RestoreOptions{Key: key, Folders: folders})
}

func trySave(st store.Store, key string, folders ...string) (*SaveResult, error) {
	return Save(context.Background(), st, SaveOptions{Key: key, Folders: folders, Force: true, PackSize: 1 << 20})
}

// TestSymlinksAtToolNamesWriteNothingOutside plants, at every name the tool
// writes in a folder, a symlink to a file or a directory outside it, then
// restores (cold and warm) and saves: nothing outside changes. Today the
// state's temporary file is written with a plain open of a fixed name.
func TestSymlinksAtToolNamesWriteNothingOutside(t *testing.T) {
	st, _ := dirStore(t)
	src := t.TempDir()
	testtree.Make(t, src)
	os.Remove(filepath.Join(src, "deep", "er", "big.bin")) // 20 subtests: keep them small
	save(t, st, "k", src)
	names := []string{
		archive.StateFileName,
		archive.StateFileName + ".tmp",
		archive.TempPrefix + "0123456789abcdef",
		archive.TempPrefix + "planted",
		"a.txt",                      // an entry's file
		"deep",                       // an entry's directory
		"deep/er/and/deeper/file.go", // a file in an entry's directory
		"ro/locked.txt",              // a file in a read-only directory
		"empty",                      // an empty file (written, not extracted)
		"link-to-file",               // an entry's symlink
	}
	for _, name := range names {
		for _, target := range []string{"victim", "sub"} {
			t.Run(name+"->"+target, func(t *testing.T) {
				outside, unchanged := outsideDir(t)
				ws := filepath.Join(t.TempDir(), "ws")
				plant := func() {
					p := filepath.Join(ws, filepath.FromSlash(name))
					os.MkdirAll(filepath.Dir(p), 0o755)
					os.Chmod(filepath.Dir(p), 0o755)
					os.RemoveAll(p)
					if err := os.Symlink(filepath.Join(outside, target), p); err != nil {
						t.Fatal(err)
					}
				}
				plant()
				if _, err := tryRestore(st, "k", ws); err != nil {
					t.Logf("restore over a planted link: %v", err)
				}
				unchanged(t)
				plant()
				if _, err := trySave(st, "k2", ws); err != nil {
					t.Logf("save with a planted link: %v", err)
				}
				unchanged(t)
				plant()
				if _, err := tryRestore(st, "k", ws); err != nil {
					t.Logf("warm restore over a planted link: %v", err)
				}
				unchanged(t)
				testtree.Chmod(t, ws)
			})
		}
	}
}

// TestHardLinkToOutsideFileIsNotChanged: a file in the folder that is a
// hard link to a file outside it; restoring the entry's file of that name
// must not change the outside file's bytes, mode or mtime, whether the
// entry's file has content or is empty, and whether it looks in place.
func TestHardLinkToOutsideFileIsNotChanged(t *testing.T) {
	st := memoryStore()
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	for _, tc := range []struct {
		name, path string
	}{
		{"file with content", "a.txt"},
		{"empty file", "empty"},
		{"file in a read-only directory", "ro/locked.txt"},
	} {
		for _, same := range []bool{false, true} {
			name := tc.name
			if same {
				name += ", outside file with the entry's size, mode and mtime"
			}
			t.Run(name, func(t *testing.T) {
				entryFile, _ := os.Lstat(filepath.Join(src, tc.path))
				outside := filepath.Join(t.TempDir(), "outside")
				os.Mkdir(outside, 0o755)
				victim := filepath.Join(outside, "victim")
				data := strings.Repeat("x", int(entryFile.Size())+3)
				if entryFile.Size() == 0 {
					data = "" // an empty file has nothing to write: only its mode and mtime
				}
				mode, mtime := os.FileMode(0o640), time.Date(2011, 1, 1, 0, 0, 0, 0, time.UTC)
				if same {
					data = strings.Repeat("y", int(entryFile.Size()))
					mode, mtime = entryFile.Mode().Perm(), entryFile.ModTime()
				}
				os.WriteFile(victim, []byte(data), 0o600)
				os.Chmod(victim, mode)
				os.Chtimes(victim, mtime, mtime)
				ws := filepath.Join(t.TempDir(), "ws")
				p := filepath.Join(ws, filepath.FromSlash(tc.path))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.Link(victim, p); err != nil {
					t.Fatal(err)
				}
				before := testtree.Snapshot(t, outside)
				if _, err := tryRestore(st, "k", ws); err != nil {
					t.Fatalf("restore: %v", err)
				}
				testtree.Equal(t, before, testtree.Snapshot(t, outside))
				testtree.Equal(t, testtree.Snapshot(t, src, archive.StateFileName), testtree.Snapshot(t, ws, archive.StateFileName))
				// And a second, warm restore.
				if _, err := tryRestore(st, "k", ws); err != nil {
					t.Fatalf("warm restore: %v", err)
				}
				testtree.Equal(t, before, testtree.Snapshot(t, outside))
				testtree.Chmod(t, ws)
			})
		}
	}
}

// shape is a snapshot without directory mtimes: creating and removing a
// temporary file moves its directory's mtime, and a rollback need not put
// that back; everything else must be as it was.
func shape(snap map[string]testtree.Entry) map[string]testtree.Entry {
	out := make(map[string]testtree.Entry, len(snap))
	for p, e := range snap {
		if e.Mode.IsDir() {
			e.MTime = 0
		}
		out[p] = e
	}
	return out
}

// corruptBlobs flips a byte in the middle of every pack of key in the
// file:// store at dir.
func corruptBlobs(t *testing.T, st store.Store, dir, key string) {
	t.Helper()
	ref, err := st.GetRef(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ref.Packs {
		name := filepath.Join(dir, filepath.FromSlash(store.BlobName(p.Digest)))
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x55
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailedRestoreLeavesFolderExactlyAsItWas: a restore that fails on a
// corrupt pack, over a folder that holds a file, a symlink or a read-only
// directory where the entry has directories: every path's type, bytes, link
// and mode (directories too), and every file's mtime, are as before, and so
// are the folder's own mode.
func TestFailedRestoreLeavesFolderExactlyAsItWas(t *testing.T) {
	st, dir := dirStore(t)
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	corruptBlobs(t, st, dir, "k")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, ws string)
	}{
		{"a file where the entry has a directory", func(t *testing.T, ws string) {
			os.WriteFile(filepath.Join(ws, "deep"), []byte("I am a file\n"), 0o640)
			os.WriteFile(filepath.Join(ws, "bin"), []byte("so am I\n"), 0o600)
		}},
		{"a symlink where the entry has a directory", func(t *testing.T, ws string) {
			os.Symlink("nowhere", filepath.Join(ws, "deep"))
			os.Mkdir(filepath.Join(ws, "elsewhere"), 0o755)
			os.Symlink("elsewhere", filepath.Join(ws, "bin"))
		}},
		{"read-only directories where the entry has directories", func(t *testing.T, ws string) {
			os.MkdirAll(filepath.Join(ws, "deep", "er"), 0o755)
			os.WriteFile(filepath.Join(ws, "deep", "er", "mine"), []byte("mine\n"), 0o644)
			os.Mkdir(filepath.Join(ws, "ro"), 0o755)
			os.Chmod(filepath.Join(ws, "deep", "er"), 0o555)
			os.Chmod(filepath.Join(ws, "deep"), 0o555)
			os.Chmod(filepath.Join(ws, "ro"), 0o500)
		}},
		{"directories with other modes and files of the entry's names", func(t *testing.T, ws string) {
			os.MkdirAll(filepath.Join(ws, "bin"), 0o700)
			os.WriteFile(filepath.Join(ws, "bin", "tool"), []byte("old tool\n"), 0o700)
			os.WriteFile(filepath.Join(ws, "a.txt"), []byte("old a\n"), 0o600)
			os.Symlink("old-target", filepath.Join(ws, "link-to-file"))
			os.Mkdir(filepath.Join(ws, "empty-dir"), 0o711)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "ws")
			os.Mkdir(ws, 0o750)
			tc.setup(t, ws)
			testtree.Touch(t, ws, time.Date(2020, 5, 6, 7, 8, 9, 0, time.UTC))
			rootBefore, _ := os.Lstat(ws)
			before := testtree.Snapshot(t, ws)
			defer testtree.Chmod(t, ws)
			// A damaged pack is a miss that says so, not a restore.
			res, err := tryRestore(st, "k", ws)
			if err != nil || res.Restored || !strings.Contains(res.MissReason, "entry k is damaged") {
				t.Fatalf("restore of a corrupt entry: %+v, %v; want a miss that names the damage", res, err)
			}
			testtree.Equal(t, shape(before), shape(testtree.Snapshot(t, ws)))
			if now, _ := os.Lstat(ws); now.Mode() != rootBefore.Mode() {
				t.Fatalf("the folder's mode is %v, was %v", now.Mode(), rootBefore.Mode())
			}
		})
	}
}

// TestKilledRestoreLeftoversAreRemoved: a restore killed midway leaves, at
// the top of the folder, its staging directory (temporary files and links
// in it) and perhaps a state file being written. The next fetch removes them
// and restores the entry exactly. Temporary files further down (left by
// versions that staged beside each file) are never saved, and the next save
// removes them.
func TestKilledRestoreLeftoversAreRemoved(t *testing.T) {
	st, _ := dirStore(t)
	src := t.TempDir()
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)
	save(t, st, "k", src)
	for _, warm := range []bool{false, true} {
		name := "into a folder holding only leftovers"
		if warm {
			name = "into a folder holding the entry and leftovers"
		}
		t.Run(name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "ws")
			if warm {
				restore(t, st, "k", nil, ws)
			}
			plant := func(paths ...string) {
				for _, p := range paths {
					full := filepath.Join(ws, filepath.FromSlash(p))
					os.MkdirAll(filepath.Dir(full), 0o755)
					if err := os.WriteFile(full, []byte("half written"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			plant(archive.TempPrefix+"00112233aabbccdd/1", archive.TempPrefix+"00112233aabbccdd/sub/2",
				archive.TempPrefix+"state-12-345")
			os.Symlink("a.txt", filepath.Join(ws, archive.TempPrefix+"00112233aabbccdd", "3"))
			os.Symlink("a.txt", filepath.Join(ws, archive.TempPrefix+"link"))
			if warm {
				os.Chmod(filepath.Join(ws, archive.TempPrefix+"00112233aabbccdd"), 0o500)
			}
			if _, err := tryRestore(st, "k", ws); err != nil {
				t.Fatalf("restore after a killed one: %v", err)
			}
			if left := testtree.WithPrefix(ws, archive.TempPrefix); len(left) > 0 {
				t.Fatalf("%d temporary files of the killed restore are left: %v", len(left), left)
			}
			testtree.Equal(t, want, testtree.Snapshot(t, ws, archive.StateFileName))

			plant("deep/er/"+archive.TempPrefix+"0f0f0f0f0f0f0f0f", "bin/"+archive.TempPrefix+"dir/inside/file")
			if warm {
				os.Chmod(filepath.Join(ws, "ro"), 0o555)
			}
			defer testtree.Chmod(t, ws)
			res := save(t, st, fmt.Sprintf("k-again-%v", warm), ws)
			if left := testtree.WithPrefix(ws, archive.TempPrefix); len(left) > 0 {
				t.Fatalf("%d temporary files of older runs are left after a save: %v", len(left), left)
			}
			if len(res.SkippedPaths) > 0 {
				t.Fatalf("the save reported leftovers as skipped paths: %v", res.SkippedPaths)
			}
		})
	}
}

// TestKilledSaveStagingLeftoversAreRemoved: a killed save leaves staged
// files in a directory store's staging area; the next save removes those
// that are old (a day: no save runs that long, and a concurrent one's are
// new).
func TestKilledSaveStagingLeftoversAreRemoved(t *testing.T) {
	st, dir := dirStore(t)
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	staging := filepath.Join(dir, "v1", "staging")
	os.MkdirAll(staging, 0o755)
	stale := filepath.Join(staging, ".tmp-killed")
	os.WriteFile(stale, []byte("part of a pack"), 0o644)
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(stale, old, old)
	os.WriteFile(filepath.Join(src, "new"), []byte("new content"), 0o644)
	save(t, st, "k2", src)
	if _, err := os.Lstat(stale); err == nil {
		t.Fatalf("a staged file of a killed save, two days old, is still in %s", staging)
	}
}

// TestEmptyOrNestedFoldersAreRefused: Folders [""] (an unset variable) and
// folders inside one another are an error for Save and Restore, before
// anything is read or written.
func TestEmptyOrNestedFoldersAreRefused(t *testing.T) {
	st := memoryStore()
	top := t.TempDir()
	// Today "" is the working directory: make it a scratch one.
	t.Chdir(top)
	a, ab, c := filepath.Join(top, "a"), filepath.Join(top, "a", "b"), filepath.Join(top, "c")
	for _, d := range []string{ab, c} {
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "f"), []byte(d), 0o644)
	}
	save(t, st, "one", c)
	save(t, st, "two", c, c+"x")
	for _, folders := range [][]string{{""}, {"", c}, {c, ""}, {a, ab}, {ab, a}, {a, a}, {a, a + "/"}, {a, filepath.Join(ab, "..")}} {
		key := "one"
		if len(folders) == 2 {
			key = "two"
		}
		if res, err := Save(context.Background(), st, SaveOptions{Key: "new", Folders: folders, Force: true}); err == nil {
			t.Errorf("Save(%q) = %+v, want an error", folders, res)
		}
		if res, err := Restore(context.Background(), st, RestoreOptions{Key: key, Folders: folders}); err == nil {
			t.Errorf("Restore(%q) = %+v, want an error", folders, res)
		}
	}
	if left, _ := os.ReadDir(top); len(left) != 2 {
		t.Errorf("the working directory holds %d entries after refused runs, want 2 (a, c)", len(left))
	}
}

// TestStaleStateInSecondFolderIsDetected: two folders whose restore states
// disagree (the second was restored from another entry since): a save must
// publish what is on disk in both.
func TestStaleStateInSecondFolderIsDetected(t *testing.T) {
	st := memoryStore()
	mk := func(content string) (string, string) {
		a, b := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
		for _, d := range []string{a, b} {
			os.MkdirAll(filepath.Join(d, "pkg"), 0o755)
			os.WriteFile(filepath.Join(d, "pkg", "index.js"), []byte(content+filepath.Base(d)), 0o644)
			testtree.Touch(t, d, pinned)
		}
		return a, b
	}
	a1, b1 := mk("AAAA")
	save(t, st, "e1", a1, b1)
	a2, b2 := mk("BBBB")
	save(t, st, "e2", a2, b2)
	f0, f1, other := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two"), filepath.Join(t.TempDir(), "one")
	restore(t, st, "e1", nil, f0, filepath.Join(t.TempDir(), "two"))
	restore(t, st, "e2", nil, other, f1) // f1 holds e2's second folder (same sizes and mtimes as e1's), and e2's state
	want0, want1 := testtree.Snapshot(t, f0, archive.StateFileName), testtree.Snapshot(t, f1, archive.StateFileName)
	save(t, st, "e3", f0, f1)
	g0, g1 := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
	restore(t, st, "e3", nil, g0, g1)
	testtree.Equal(t, want0, testtree.Snapshot(t, g0, archive.StateFileName))
	testtree.Equal(t, want1, testtree.Snapshot(t, g1, archive.StateFileName))

	// A state forged in the second folder only: the first folder's state
	// (e1) and the second's (a copy of e2's, over e1's bytes) disagree.
	h0, h1 := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
	restore(t, st, "e2", nil, h0, h1)
	restore(t, st, "e1", nil, h0, h1)
	e2state, err := os.ReadFile(filepath.Join(other, archive.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(h1, archive.StateFileName), e2state, 0o644)
	replaceSameSizeMTime(t, filepath.Join(h1, "pkg", "index.js"))
	want1 = testtree.Snapshot(t, h1, archive.StateFileName)
	save(t, st, "e4", h0, h1)
	g0, g1 = filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
	restore(t, st, "e4", nil, g0, g1)
	testtree.Equal(t, want1, testtree.Snapshot(t, g1, archive.StateFileName))
}

// replaceSameSizeMTime rewrites p in place with other bytes of its size and
// puts its mtime back.
func replaceSameSizeMTime(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	for i := range data {
		data[i] = 'a' + (data[i]+1)%26
	}
	if err := os.WriteFile(p, data, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
}

func memoryStore() store.Store { return memory.NewStore("t") }

// TestSecondFolderIsProtectedToo: with two folders, a symlink planted at
// the state's names in the second folder writes nothing outside, and a
// failed restore leaves the second folder as it was.
func TestSecondFolderIsProtectedToo(t *testing.T) {
	st, dir := dirStore(t)
	a, b := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
	testtree.Make(t, a)
	os.MkdirAll(filepath.Join(b, "sub", "dir"), 0o755)
	os.WriteFile(filepath.Join(b, "sub", "dir", "f"), []byte("in the second folder\n"), 0o644)
	save(t, st, "two", a, b)
	for _, name := range []string{archive.StateFileName, archive.StateFileName + ".tmp"} {
		t.Run("symlink at "+name, func(t *testing.T) {
			outside, unchanged := outsideDir(t)
			w0, w1 := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
			os.MkdirAll(w1, 0o755)
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(w1, name))
			if _, err := tryRestore(st, "two", w0, w1); err != nil {
				t.Logf("restore: %v", err)
			}
			unchanged(t)
			os.Remove(filepath.Join(w1, name))
			os.Symlink(filepath.Join(outside, "victim"), filepath.Join(w1, name))
			if _, err := trySave(st, "two-again", w0, w1); err != nil {
				t.Logf("save: %v", err)
			}
			unchanged(t)
			testtree.Chmod(t, w0)
		})
	}
	t.Run("failed restore", func(t *testing.T) {
		corruptBlobs(t, st, dir, "two")
		w0, w1 := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
		os.MkdirAll(w0, 0o755)
		os.MkdirAll(w1, 0o755)
		os.WriteFile(filepath.Join(w1, "sub"), []byte("a file where the entry has a directory\n"), 0o600)
		testtree.Touch(t, w1, testtree.Old)
		before := testtree.Snapshot(t, w1)
		// Whether the flipped byte fails decompression or decompresses to
		// content of another digest, the pack's digest says it is damaged:
		// the entry is passed over, a miss.
		if r, err := tryRestore(st, "two", w0, w1); err != nil || r.Restored {
			t.Fatalf("restore of a corrupt entry: %+v, %v; want a miss", r, err)
		}
		testtree.Equal(t, shape(before), shape(testtree.Snapshot(t, w1)))
	})
}
