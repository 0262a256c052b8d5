package archive

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/format"
)

// sysCalls is what countCalls counted, by kind.
type sysCalls [kKinds]int64

func (c sysCalls) String() string {
	names := [kKinds]string{"open", "mkdir", "stat", "chmod", "utimes", "close", "getdents", "read"}
	var b strings.Builder
	for k, n := range c {
		fmt.Fprintf(&b, "%s=%d ", names[k], n)
	}
	return strings.TrimSpace(b.String())
}

// countCalls runs f with the counting of system calls on (tests that use
// it must not run in parallel) and returns what it made.
func countCalls(t *testing.T, f func()) sysCalls {
	t.Helper()
	for k := range sysCount {
		sysCount[k].Store(0)
	}
	countingSys = true
	defer func() { countingSys = false }()
	f()
	var c sysCalls
	for k := range sysCount {
		c[k] = sysCount[k].Load()
	}
	return c
}

// writeSmallTree writes dirs directories (a/dNN, so a parent holds them
// all), each with files small files and, with extras, one empty file and
// one symlink, and returns its top.
func writeSmallTree(t *testing.T, dirs, files int, extras bool) string {
	t.Helper()
	src := t.TempDir()
	for d := range dirs {
		dir := filepath.Join(src, "a", fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.js", f)), []byte(strings.Repeat("x", 100+f)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if !extras {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("f00.js", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// per20Dirs returns what run(30) costs more than run(10): the calls of 20
// directories, fixed costs cancelled out.
func per20Dirs(run func(dirs int) sysCalls) sysCalls {
	small, big := run(10), run(30)
	var per sysCalls
	for k := range per {
		per[k] = big[k] - small[k]
	}
	return per
}

// smallTree writes a tree (writeSmallTree, with extras), packs it into one
// pack and returns the index and the pack.
func smallTree(t *testing.T, dirs, files int) (*Index, []byte) {
	t.Helper()
	src := writeSmallTree(t, dirs, files, true)
	x, packFiles := walkToPack(t, src)
	var pack bytes.Buffer
	if err := WritePack(&pack, 0, packFiles); err != nil {
		t.Fatal(err)
	}
	x.Packs = []format.Descriptor{{Size: int64(pack.Len())}}
	x.IDs = nil
	return x, pack.Bytes()
}

// walkToPack walks src and returns its index and its files with content,
// as WritePack takes them.
func walkToPack(t *testing.T, src string) (*Index, []PackFile) {
	t.Helper()
	x, _, err := Walk([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	var packFiles []PackFile
	for i := range x.Entries {
		if e := &x.Entries[i]; e.Type == TypeFile && e.Size > 0 {
			packFiles = append(packFiles, PackFile{Entry: e, Name: x.TarName(e), Source: filepath.Join(src, e.Path), ID: x.IDs[i]})
		}
	}
	return x, packFiles
}

// restoreInto runs a whole restore of x (one pack) into dst, hashing the
// files on disk one at a time (so that what is counted does not depend on
// how the runs were shared).
func restoreInto(t *testing.T, x *Index, pack []byte, dst string) {
	t.Helper()
	ex, err := NewExtractor(x, []string{dst})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	ex.Jobs = 1
	packs, err := ex.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		if err := ReadPack(bytes.NewReader(pack), x.PackBounds()[p], func(tr *tar.Reader) error { return ex.ExtractPack(p, tr) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := ex.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestPackSystemCalls: packing costs, per file, one open (by its name, in
// a descriptor of its directory), one read (asking for a byte more than
// its size: the short read and the fstat after it say it ended), one stat
// (its identity, checked after the read) and one close; per directory one
// open and one close. Before: every file opened by its whole path, and a
// second read of each, for the end.
func TestPackSystemCalls(t *testing.T) {
	const files = 8
	run := func(dirs int) sysCalls {
		_, packFiles := walkToPack(t, writeSmallTree(t, dirs, files, false))
		return countCalls(t, func() {
			if err := WritePack(io.Discard, 0, packFiles); err != nil {
				t.Fatal(err)
			}
		})
	}
	per := per20Dirs(run)
	t.Logf("20 directories of %d files: %v", files, per)
	const dirs = 20
	want := sysCalls{kOpen: dirs * (files + 1), kStat: dirs * files, kClose: dirs * (files + 1), kRead: dirs * files}
	if per != want {
		t.Errorf("20 directories cost %v, want %v", per, want)
	}
}

// TestColdRestoreSystemCalls: restoring into an empty folder costs, per
// directory, one mkdir and one utimes, with no stat and no chmod when the
// umask leaves the directory's mode as it is, and an open and a close for
// each pass that writes into it (the packs' files, then its links and
// empty files); per file with content one open, one stat (its identity,
// for the state), one utimes and one close; per empty file the same but
// the stat, and no chmod. Counted on two sizes of the same shape, so that
// the fixed costs cancel out. Before: 4 more opens, closes and stats and 2
// chmods per directory (a failed open before the mkdir, an open and stat
// after it, an open and chmod at Commit; the empty file's chmod).
func TestColdRestoreSystemCalls(t *testing.T) {
	if umask()&0o022 != umask() {
		t.Skip("the umask takes more than group and other write bits")
	}
	const files = 8
	run := func(dirs int) sysCalls {
		x, pack := smallTree(t, dirs, files)
		dst := filepath.Join(t.TempDir(), "dst")
		return countCalls(t, func() { restoreInto(t, x, pack, dst) })
	}
	per := per20Dirs(run)
	t.Logf("20 directories of %d files, an empty file and a link: %v", files, per)
	const dirs = 20
	// Per directory: its files (open, stat, close; utimes, with the empty
	// file's and the link's), its own mkdir, two opens and closes, utimes.
	want := sysCalls{
		kOpen:   dirs * (files + 1 + 2),
		kMkdir:  dirs,
		kStat:   dirs * files,
		kChmod:  0,
		kUtimes: dirs * (files + 2 + 1),
		kClose:  dirs * (files + 1 + 2),
	}
	if per != want {
		t.Errorf("20 directories cost %v, want %v", per, want)
	}
}

// TestWarmRestoreSystemCalls: restoring the same entry again into the
// folder it was restored into, with no record to prove anything (every
// file is read to check it), costs per directory a stat and a utimes (no
// chmod: its mode is as it was) and an open and a close for each of the two
// passes (Prepare and the files' check, then Commit's links and empty
// files), and per file a stat (of its name), an open, a stat (of what was
// opened), a read and a close: no directory is opened again per file. Before: each
// file checked opened every directory of its path, each directory was
// opened and chmodded at Commit, and the empty file chmodded.
func TestWarmRestoreSystemCalls(t *testing.T) {
	const files = 8
	run := func(dirs int) sysCalls {
		x, pack := smallTree(t, dirs, files)
		dst := filepath.Join(t.TempDir(), "dst")
		restoreInto(t, x, pack, dst)
		return countCalls(t, func() { restoreInto(t, x, pack, dst) })
	}
	per := per20Dirs(run)
	t.Logf("20 directories of %d files, an empty file and a link: %v", files, per)
	const dirs = 20
	want := sysCalls{
		kOpen:   dirs * (files + 2),
		kStat:   dirs * (2*files + 2 + 1),
		kUtimes: dirs * (2 + 1),
		kClose:  dirs * (files + 2),
		kRead:   dirs * files, // each file read once, in one call
	}
	if per != want {
		t.Errorf("20 directories cost %v, want %v", per, want)
	}
}

// TestWalkSystemCalls: a walk costs per directory one open, two getdents
// (the names, then the end) and one close, all on the directory's own
// descriptor, and one stat per entry: no fcntl (an os.File's set-up of the
// descriptor, which the walk made once per directory before, through
// os.File, whose getdents and close these wrappers did not see).
func TestWalkSystemCalls(t *testing.T) {
	const files = 8
	run := func(dirs int) sysCalls {
		src := writeSmallTree(t, dirs, files, false)
		return countCalls(t, func() {
			if _, _, err := Walk([]string{src}); err != nil {
				t.Fatal(err)
			}
		})
	}
	per := per20Dirs(run)
	t.Logf("20 directories of %d files: %v", files, per)
	const dirs = 20
	want := sysCalls{kOpen: dirs, kStat: dirs * (files + 1), kClose: dirs, kGetdents: 2 * dirs}
	if per != want {
		t.Errorf("20 directories cost %v, want %v", per, want)
	}
}

// TestWalkAllocations: a walk allocates per directory, not per entry: the
// names are stat'ed where getdents left them and a directory's paths are
// one string. Counted on two sizes of the same shape, 20 directories of 32
// files apart. Before: three allocations an entry (its name, its path,
// and the name's copy that unix.Fstatat makes to end it with a NUL).
func TestWalkAllocations(t *testing.T) {
	const files = 32
	allocs := func(dirs int) float64 {
		src := writeSmallTree(t, dirs, files, false)
		return testing.AllocsPerRun(5, func() {
			if _, _, err := Walk([]string{src}); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, big := allocs(10), allocs(30)
	perDir := (big - small) / 20
	t.Logf("%.1f allocations a directory of %d files", perDir, files)
	if perDir > files/2 {
		t.Errorf("a directory of %d files costs %.1f allocations, want at most %d", files, perDir, files/2)
	}
}
