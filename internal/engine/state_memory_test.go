package engine

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// syntheticIndex is an index of n files of 70-character paths in n/200
// directories, with records, as a walk and a save leave it.
func syntheticIndex(n int) (*archive.Index, []archive.FileID) {
	x := &archive.Index{Format: format.Version, Roots: []string{"tree"}, Packs: []format.Descriptor{{Digest: digest.FromBytes([]byte("p")), Size: 1 << 40}}}
	var ids []archive.FileID
	for d := 0; d*200 < n; d++ {
		dir := fmt.Sprintf("lib-%03d/src/mod-%04d", d/30, d)
		if d%30 == 0 {
			x.Entries = append(x.Entries, archive.Entry{Path: fmt.Sprintf("lib-%03d", d/30), Type: archive.TypeDir, Mode: 0o755, Pack: archive.NoPack},
				archive.Entry{Path: fmt.Sprintf("lib-%03d/src", d/30), Type: archive.TypeDir, Mode: 0o755, Pack: archive.NoPack})
			ids = append(ids, archive.FileID{}, archive.FileID{})
		}
		x.Entries = append(x.Entries, archive.Entry{Path: dir, Type: archive.TypeDir, Mode: 0o755, Pack: archive.NoPack})
		ids = append(ids, archive.FileID{})
		for j := 0; j < 200 && d*200+j < n; j++ {
			i := d*200 + j
			sum := sha256.Sum256([]byte(fmt.Sprint(i)))
			x.Entries = append(x.Entries, archive.Entry{Path: fmt.Sprintf("%s/component-handler-%06d.generated.spec.ts", dir, i), Type: archive.TypeFile, Mode: 0o644,
				MTime: 1_700_000_000_000_000_000 + int64(i), Size: int64(1 + i%2048), Digest: digest.Sum(sum), Pack: 0, Offset: int64(i) * 2048})
			ids = append(ids, archive.FileID{Dev: 2049, Ino: uint64(1000 + i), Ctime: 1_700_000_000_000_000_000 + int64(i)})
		}
	}
	x.Sort() // a no-op here, but Validate wants the walk's order
	return x, ids
}

// entryOf is the entry of index x, stored as blob, as Load gives it.
func entryOf(x *archive.Index, blob []byte) *Entry {
	return &Entry{Ref: &store.Ref{Index: format.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}}, Index: x, Blob: blob}
}

// bytesPerEntry returns what f allocates, and what the value it returns
// keeps live (the heap with it, less the heap once it is dropped: what
// else the collector frees meanwhile does not count), per entry of n;
// then the value of another call of f, for the caller to check.
func bytesPerEntry[T any](n int, f func() T) (v T, allocated, live float64) {
	var before, with, without runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	keep := f()
	runtime.ReadMemStats(&with)
	allocated = float64(with.TotalAlloc-before.TotalAlloc) / float64(n)
	runtime.GC()
	runtime.ReadMemStats(&with)
	runtime.KeepAlive(keep)
	var zero T
	keep = zero
	runtime.GC()
	runtime.ReadMemStats(&without)
	live = (float64(with.HeapAlloc) - float64(without.HeapAlloc)) / float64(n)
	return f(), allocated, live
}

// TestStateMemoryPerEntry: writing the restore state of 150,000 files
// allocates next to nothing per entry (format 2 marshalled the blob in
// base64 and the records in decimal into one buffer: about 300 B an
// entry), and reading it back costs the blob, the records and the
// decoded index, not the file's text on top (format 2: about 1,100 B).
func TestStateMemoryPerEntry(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	if testing.Short() {
		t.Skip("150,000 entries")
	}
	x, ids := syntheticIndex(150_000)
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}
	blob, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := len(x.Entries)
	_, wa, _ := bytesPerEntry(n, func() any {
		if err := writeState([]string{dir}, x, blobOf(blob), ids, 1<<62, "k", "s", time.Now()); err != nil {
			t.Fatal(err)
		}
		return nil
	})
	// A save over it: the state is read (its blob and records), then
	// joined to the walk an entry at a time, keeping only what the walk
	// may reuse, never the state's index whole.
	walk := &archive.Index{Format: x.Format, Roots: x.Roots, Entries: slices.Clone(x.Entries), IDs: ids}
	for i := range walk.Entries {
		walk.Entries[i].Digest, walk.Entries[i].Pack, walk.Entries[i].Offset = digest.Sum{}, archive.NoPack, 0
		if !hasContent(&walk.Entries[i]) {
			walk.Entries[i].Digest, walk.Entries[i].Pack, walk.Entries[i].Offset = x.Entries[i].Digest, x.Entries[i].Pack, x.Entries[i].Offset
		}
	}
	b, ra, rl := bytesPerEntry(n, func() *base {
		fs, why := readState([]string{dir}, nil)
		if fs == nil {
			t.Fatal(why)
		}
		b := &base{name: "state", blob: fs.blob, fs: fs}
		if err := b.join(walk); err != nil {
			t.Fatal(err)
		}
		return b
	})
	t.Logf("%d entries, index blob %d B: writing the state allocated %.0f B an entry; reading and joining it %.0f B, %.0f B live", n, len(blob), wa, ra, rl)
	if wa > 16 {
		t.Errorf("writing the state allocated %.0f B an entry, want at most 16 (the blob and records streamed)", wa)
	}
	if ra > 130 || rl > 90 {
		t.Errorf("reading and joining the state allocated %.0f B an entry and left %.0f live, want at most 130 and 90 (32 B and a digest a file the walk may reuse; not the index, about 250, nor its blob, 43, which is read from the state file as it is joined)", ra, rl)
	}
	if !b.same || !b.holds || len(b.files) != b.contentFiles {
		t.Fatalf("the state of the walk's own entry: same %v, holds %v, %d of %d files", b.same, b.holds, len(b.files), b.contentFiles)
	}
	for i := range x.Entries {
		if k := b.at[i]; hasContent(&x.Entries[i]) && (k == 0 || !b.files[k-1].proven || b.files[k-1].digest != x.Entries[i].Digest) {
			t.Fatalf("entry %d: joined as %d, want it proven by its record and its digest", i, k)
		}
	}

	// A warm restore of the entry the folder holds: the state's index is
	// the one the restore has, so it is neither read nor decoded again,
	// and the extractor's lookup is by position, with no map of paths.
	have := entryOf(x, blob)
	var same *folderState
	_, ka, _ := bytesPerEntry(n, func() any {
		var why string
		if same, why = readState([]string{dir}, have); same == nil {
			t.Fatal(why)
		}
		return same.known(x)
	})
	t.Logf("reading the state of the entry being restored, and its lookup: %.0f B an entry", ka)
	if same.X != x || ka > 80 {
		t.Errorf("reading the state of the entry being restored allocated %.0f B an entry (its own index: %v), want at most 80 (the records) and no index of its own", ka, same.X != x)
	}
	known := same.known(x)
	for i := range x.Entries {
		e := &x.Entries[i]
		if !hasContent(e) {
			continue
		}
		if got := known(i, ids[i], e.Size, e.MTime, e.Mode); got != e.Digest {
			t.Fatalf("entry %d, as recorded: known says %q, want its digest", i, got)
		}
		if got := known(i, ids[i], e.Size, e.MTime+1, e.Mode); !got.IsZero() {
			t.Fatalf("entry %d with another mtime: known says %q, want nothing proven", i, got)
		}
	}
}

// TestKnownOfAnotherIndex: restoring an entry over folders holding another
// (a warm restore of a newer entry), what the state proves is joined by
// path, and what stays held is the proofs, not the state's index.
func TestKnownOfAnotherIndex(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	if testing.Short() {
		t.Skip("150,000 entries")
	}
	old, ids := syntheticIndex(150_000)
	blob, err := old.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := writeState([]string{dir}, old, blobOf(blob), ids, 1<<62, "k1", "s", time.Now()); err != nil {
		t.Fatal(err)
	}
	// The new entry: every file of old under another digest one in ten,
	// the first 1,000 files gone, and a file that old does not have.
	x, _ := syntheticIndex(150_000)
	x.Entries = append(x.Entries[:3], x.Entries[1003:]...)
	for i := range x.Entries {
		if e := &x.Entries[i]; hasContent(e) && i%10 == 0 {
			e.Digest = digest.SumBytes(fmt.Append(nil, "other", i))
		}
	}
	x.Entries = append(x.Entries, archive.Entry{Path: "zz-new", Type: archive.TypeFile, Mode: 0o644, Size: 5, Digest: digest.SumBytes([]byte("zz-new")), Pack: 0})
	oldAt := map[string]int{}
	for i := range old.Entries {
		oldAt[old.Entries[i].Path] = i
	}
	xblob, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	known, _, live := bytesPerEntry(len(x.Entries), func() func(int, archive.FileID, int64, int64, uint32) digest.Sum {
		fs, why := readState([]string{dir}, entryOf(x, xblob))
		if fs == nil || fs.X != nil {
			t.Fatalf("state %+v (%s), want one whose index is not decoded", fs, why)
		}
		return fs.known(x)
	})
	t.Logf("what the lookup keeps: %.0f B an entry", live)
	if live > 80 {
		t.Errorf("the lookup keeps %.0f B an entry, want at most 80 (48 B a proof, no digest of a file the new entry holds too: was 140)", live)
	}
	proved := 0
	for i := range x.Entries {
		e := &x.Entries[i]
		if !hasContent(e) {
			continue
		}
		j, ok := oldAt[e.Path]
		if !ok {
			if got := known(i, archive.FileID{Dev: 1, Ino: 1, Ctime: 1}, e.Size, e.MTime, e.Mode); !got.IsZero() {
				t.Fatalf("entry %s, not in the state's index: known says %q", e.Path, got)
			}
			continue
		}
		b := &old.Entries[j]
		if got := known(i, ids[j], b.Size, b.MTime, b.Mode); got != b.Digest {
			t.Fatalf("entry %s, as recorded: known says %q, want the state's digest %q", e.Path, got, b.Digest)
		}
		if got := known(i, archive.FileID{Dev: ids[j].Dev, Ino: ids[j].Ino + 1, Ctime: ids[j].Ctime}, b.Size, b.MTime, b.Mode); !got.IsZero() {
			t.Fatalf("entry %s, another inode: known says %q", e.Path, got)
		}
		proved++
	}
	if proved < 140_000 {
		t.Fatalf("%d files proven, want the 149,000 both indexes list", proved)
	}
	runtime.KeepAlive(known)

	// A state whose records are not its index's (the records of old, the
	// index of a smaller entry): nothing is proven.
	small, _ := syntheticIndex(3_000) // its files 1,000 to 2,999 are in x, with the records old has for them
	sblob, err := small.Encode()
	if err != nil {
		t.Fatal(err)
	}
	forged := t.TempDir()
	if err := writeState([]string{forged}, old, blobOf(sblob), ids, 1<<62, "k1", "s", time.Now()); err != nil {
		t.Fatal(err)
	}
	fs, why := readState([]string{forged}, entryOf(x, xblob))
	if fs == nil {
		t.Fatal(why)
	}
	k := fs.known(x)
	for i := range x.Entries {
		e := &x.Entries[i]
		if j, ok := oldAt[e.Path]; ok && hasContent(e) {
			if got := k(i, ids[j], old.Entries[j].Size, old.Entries[j].MTime, old.Entries[j].Mode); !got.IsZero() {
				t.Fatalf("a state whose records are another index's proved %s: %q", e.Path, got)
			}
		}
	}
}
