package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// f is a file entry of root 0 for the planning tables: path, size, pack.
type f struct {
	path string
	size int64
	pack int
}

// index builds an index of files (and a directory "d") with npacks packs;
// every file has its own FileID and, when in a pack, an offset and digest
// derived from its path.
func index(npacks int, files ...f) *archive.Index {
	x := &archive.Index{Format: format.Version, Roots: []string{"r"}}
	for p := range npacks {
		x.Packs = append(x.Packs, format.Descriptor{Digest: digest.FromBytes(fmt.Appendf(nil, "pack %d", p)), Size: int64(100 + p)})
	}
	x.Entries = append(x.Entries, archive.Entry{Path: "d", Type: archive.TypeDir, Pack: archive.NoPack})
	x.IDs = append(x.IDs, archive.FileID{Ino: 1})
	for i, e := range files {
		en := archive.Entry{Path: e.path, Type: archive.TypeFile, Mode: 0o644, MTime: 7, Size: e.size, Pack: e.pack}
		if e.pack >= 0 {
			en.Digest = digest.SumBytes([]byte(e.path))
			en.Offset = int64(512 * i)
		}
		x.Entries = append(x.Entries, en)
		x.IDs = append(x.IDs, archive.FileID{Ino: uint64(2 + i)})
	}
	return x
}

// joined is base bx (with records ids, or none) joined to the walk x.
func joined(t testing.TB, x, bx *archive.Index, ids []archive.FileID) *base {
	t.Helper()
	b := &base{name: "test base", x: bx, ids: ids}
	if err := b.join(x); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMatchUnchanged(t *testing.T) {
	const no = archive.NoPack
	bx := index(2, f{"same", 10, 0}, f{"grown", 10, 0}, f{"empty", 0, no}, f{"other", 5, 1})
	x := index(0, f{"same", 10, no}, f{"grown", 11, no}, f{"empty", 0, no}, f{"new", 5, no}, f{"other", 5, no})
	for _, tc := range []struct {
		name      string
		ids       []archive.FileID
		wantReuse []int
		wantHash  []int
	}{
		// Entries: 0 d, 1 same, 2 grown, 3 empty, 4 new, 5 other; the
		// base files the walk may reuse: 1 same, 2 other.
		{"no records: every match is hashed", nil, []int{0, 1, 0, 0, 0, 2}, []int{1, 5}},
		// Records are per base entry: same is x's Ino 2, other x's Ino 6.
		{"records prove both", []archive.FileID{{Ino: 1}, {Ino: 2}, {Ino: 3}, {Ino: 4}, {Ino: 6}}, []int{0, 1, 0, 0, 0, 2}, nil},
		{"a record differs", []archive.FileID{{Ino: 1}, {Ino: 2}, {Ino: 3}, {Ino: 4}, {Ino: 99}}, []int{0, 1, 0, 0, 0, 2}, []int{5}},
		{"a zero record proves nothing", []archive.FileID{{Ino: 1}, {}, {Ino: 3}, {Ino: 4}, {Ino: 6}}, []int{0, 1, 0, 0, 0, 2}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reuse, hash := matchUnchanged(x, joined(t, x, bx, tc.ids))
			if !slices.Equal(reuse, tc.wantReuse) || !slices.Equal(hash, tc.wantHash) {
				t.Fatalf("reuse %v, hash %v; want %v, %v", reuse, hash, tc.wantReuse, tc.wantHash)
			}
		})
	}
	t.Run("no base", func(t *testing.T) {
		reuse, hash := matchUnchanged(x, &base{})
		if !slices.Equal(reuse, make([]int, len(x.Entries))) || hash != nil {
			t.Fatalf("reuse %v, hash %v without a base", reuse, hash)
		}
	})
	t.Run("a proven file whose mtime changed is hashed", func(t *testing.T) {
		y := index(0, f{"same", 10, no})
		y.Entries[1].MTime++
		_, hash := matchUnchanged(y, joined(t, y, bx, slices.Clone(bx.IDs)))
		if !slices.Equal(hash, []int{1}) {
			t.Fatalf("hash %v", hash)
		}
	})
}

// TestReuseRuleAtItsBoundary: a base pack is kept when its live files end
// within half of what a restore may read of it (twice what they take), and
// never when none of its files is live.
func TestReuseRuleAtItsBoundary(t *testing.T) {
	const slack = archive.PackSlack
	for _, tc := range []struct {
		l    packLife
		keep bool
	}{
		{packLife{files: 3, live: 3000, end: 3000}, true}, // all live
		{packLife{files: 1, live: 3000, end: 3000 + slack + 3000}, true},
		{packLife{files: 1, live: 3000, end: 3000 + slack + 3000 + 1}, false}, // one byte past
		{packLife{files: 1, live: 600, end: 9000}, false},
		{packLife{files: 0, live: 0, end: 0}, false}, // nothing live: never kept
	} {
		if got := worthKeeping(tc.l); got != tc.keep {
			t.Errorf("worthKeeping(%+v) = %v, want %v", tc.l, got, tc.keep)
		}
	}
}

// withOffsets sets the offset of each file of x in a pack as WritePack
// would write them at most: after the TarBytes of the files before it in
// its pack.
func withOffsets(x *archive.Index) *archive.Index {
	at := make([]int64, len(x.Packs))
	for i := range x.Entries {
		if e := &x.Entries[i]; e.Pack >= 0 {
			e.Offset = at[e.Pack]
			at[e.Pack] += x.TarBytes(e)
		}
	}
	return x
}

// TestLivePacksAtTheBoundary runs the rule on indexes: pack 0 holds a kept
// file and a deleted one, before it or after it. A dead file before the
// live one is read past by a restore, so the pack is kept only while it
// takes no more than about what the live one does; one after it is never
// read, whatever its size.
func TestLivePacksAtTheBoundary(t *testing.T) {
	const no = archive.NoPack
	// "gone" sorts before "kept", "zgone" after it; each name's header
	// takes 2048 bytes (Index.TarBytes), so "gone" of g bytes may be
	// kept beside "kept" of 50 while g rounded up to 512 is at most
	// PackSlack + 512.
	for _, tc := range []struct {
		name  string
		dead  f
		worth bool
	}{
		{"a byte gone before", f{"gone", 1, 0}, true},
		{"as much gone before as allowed", f{"gone", 2560, 0}, true},
		{"a byte more gone before", f{"gone", 2561, 0}, false},
		{"a lot gone after", f{"zgone", 10 << 20, 0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bx := index(2, tc.dead, f{"kept", 50, 0}, f{"other", 7, 1}, f{"empty", 0, no})
			slices.SortFunc(bx.Entries, func(a, b archive.Entry) int { return archive.CompareEntries(&a, &b) })
			withOffsets(bx)
			x := index(0, f{"kept", 50, no}, f{"other", 8, no}, f{"empty", 0, no})
			b := joined(t, x, bx, nil)
			reuse, _ := matchUnchanged(x, b)
			life := livePacks(x, b, reuse)
			kept := x.TarBytes(&archive.Entry{Path: "kept", Size: 50})
			if life[0].files != 1 || life[0].live != kept {
				t.Fatalf("pack 0: %+v, want 1 file of %d bytes", life[0], kept)
			}
			if got := worthKeeping(life[0]); got != tc.worth {
				t.Fatalf("pack 0 (%+v) worth keeping: %v, want %v", life[0], got, tc.worth)
			}
			if worthKeeping(life[1]) {
				t.Fatal("pack 1, whose only file changed, is worth keeping")
			}
		})
	}
	if life := livePacks(index(0), &base{}, nil); life != nil {
		t.Fatalf("no base: %v", life)
	}
}

// TestPlanPacksRenumbers: kept base packs become packs 0.. in the base's
// order; a file whose pack is dropped is packed anew, after them.
func TestPlanPacksRenumbers(t *testing.T) {
	const no = archive.NoPack
	bx := index(3, f{"a", 10, 0}, f{"b", 20, 1}, f{"c", 30, 2}, f{"c2", 5, 2})
	x := index(0, f{"a", 10, no}, f{"b", 20, no}, f{"c", 30, no}, f{"c2", 5, no}, f{"new", 1, no})
	b := joined(t, x, bx, nil)
	reuse, _ := matchUnchanged(x, b)
	plan := planPacks(x, b, reuse, []bool{false, true, true}, 1<<20)
	if want := []format.Descriptor{bx.Packs[1], bx.Packs[2]}; !slices.Equal(plan.kept, want) {
		t.Fatalf("kept %v, want %v", plan.kept, want)
	}
	if want := []int{-1, 0, 1}; !slices.Equal(plan.newPos, want) {
		t.Fatalf("newPos %v, want %v", plan.newPos, want)
	}
	// Entries: 0 d, 1 a, 2 b, 3 c, 4 c2, 5 new; base files 1 a, 2 b, 3 c, 4 c2.
	if want := []int{0, 0, 2, 3, 4, 0}; !slices.Equal(plan.reuse, want) {
		t.Fatalf("reuse %v, want %v", plan.reuse, want)
	}
	if got := groupNames(x, plan.fresh); !slices.Equal(got, []string{"a new"}) {
		t.Fatalf("fresh packs %q", got)
	}
	if src := packFiles(x, []string{"/w"}, plan.fresh[0])[0].Source; src != filepath.Join("/w", "a") {
		t.Fatalf("source %q", src)
	}
	if n := plan.apply(x, b); n != 3 {
		t.Fatalf("apply reused %d files, want 3", n)
	}
	if !slices.Equal(x.Packs, plan.kept) {
		t.Fatalf("x.Packs %v", x.Packs)
	}
	for i, want := range []struct {
		pack   int
		offset int64
		digest digest.Sum
	}{
		2: {0, bx.Entries[2].Offset, bx.Entries[2].Digest},
		3: {1, bx.Entries[3].Offset, bx.Entries[3].Digest},
		4: {1, bx.Entries[4].Offset, bx.Entries[4].Digest},
	} {
		e := x.Entries[i]
		if !want.digest.IsZero() && (e.Pack != want.pack || e.Offset != want.offset || e.Digest != want.digest) {
			t.Errorf("entry %s: pack %d offset %d digest %s, want %+v", e.Path, e.Pack, e.Offset, e.Digest, want)
		}
	}
	if e := x.Entries[1]; !e.Digest.IsZero() || e.Pack != no {
		t.Errorf("entry a, packed anew, was given pack %d digest %q", e.Pack, e.Digest)
	}
}

func TestPlanPacksWithoutBase(t *testing.T) {
	const no = archive.NoPack
	x := index(0, f{"a", 10, no}, f{"b", 20, no})
	plan := planPacks(x, &base{}, make([]int, len(x.Entries)), nil, 1<<20)
	if plan.kept != nil || plan.newPos != nil || plan.apply(x, &base{}) != 0 || len(x.Packs) != 0 {
		t.Fatalf("a plan without base keeps packs: %+v", plan)
	}
	if got := groupNames(x, plan.fresh); !slices.Equal(got, []string{"a b"}) {
		t.Fatalf("fresh packs %q", got)
	}
}

// TestGroupFreshAtThePackSize: a pack is closed before the file that would
// take it past the pack size; exactly the pack size fits; packs of a total
// over the pack size are an even number of about equal sizes.
func TestGroupFreshAtThePackSize(t *testing.T) {
	const no = archive.NoPack
	for _, tc := range []struct {
		name  string
		sizes []int64
		want  []string
	}{
		{"exactly the pack size", []int64{60, 40}, []string{"f0 f1"}},
		{"one byte over", []int64{60, 41}, []string{"f0", "f1"}},
		{"one byte under", []int64{60, 39, 1}, []string{"f0 f1 f2"}},
		{"then one more byte: two packs, the cut in the middle", []int64{60, 40, 1}, []string{"f0", "f1 f2"}},
		{"a file larger than a pack", []int64{10, 250, 10}, []string{"f0", "f1", "f2"}},
		{"empty files are in no pack", []int64{0, 100, 0}, []string{"f1"}},
		{"nothing", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []f
			for i, s := range tc.sizes {
				files = append(files, f{fmt.Sprintf("f%d", i), s, no})
			}
			x := index(0, files...)
			got := groupNames(x, groupFresh(x, make([]int, len(x.Entries)), 100))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("packs %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("equal packs, an even number of them", func(t *testing.T) {
		// 21 files of 10 bytes, packs of at most 100: before, two full
		// packs and a last one of 10 bytes that one packer compressed
		// alone; now four of 50-60.
		var files []f
		for i := range 21 {
			files = append(files, f{fmt.Sprintf("f%02d", i), 10, no})
		}
		x := index(0, files...)
		var sizes []int64
		for _, g := range groupFresh(x, make([]int, len(x.Entries)), 100) {
			var n int64
			for _, i := range g {
				n += x.Entries[i].Size
			}
			sizes = append(sizes, n)
		}
		if !slices.Equal(sizes, []int64{50, 60, 50, 50}) {
			t.Fatalf("pack sizes %v, want [50 60 50 50]", sizes)
		}
	})
	t.Run("reused files are left out", func(t *testing.T) {
		x := index(0, f{"f0", 60, no}, f{"f1", 60, no}, f{"f2", 40, no})
		got := groupNames(x, groupFresh(x, []int{0, 0, 9, 0}, 100))
		if !slices.Equal(got, []string{"f0 f2"}) {
			t.Fatalf("packs %q", got)
		}
	})
}

// groupNames gives each group as its file names, space-separated.
func groupNames(x *archive.Index, groups [][]int32) []string {
	var out []string
	for _, g := range groups {
		s := ""
		for k, i := range g {
			if k > 0 {
				s += " "
			}
			s += x.TarName(&x.Entries[i])
		}
		out = append(out, s)
	}
	return out
}

// statCounter counts StatBlob calls per digest, and fails those of fail.
type statCounter struct {
	store.Store
	mu    sync.Mutex
	stats map[digest.Digest]int
	fail  digest.Digest
}

func (s *statCounter) StatBlob(ctx context.Context, d digest.Digest) (store.BlobInfo, error) {
	s.mu.Lock()
	s.stats[d]++
	s.mu.Unlock()
	if d == s.fail {
		return store.BlobInfo{}, errUnreachable
	}
	return s.Store.StatBlob(ctx, d)
}

// TestStillStored: only packs worth keeping are asked for; one gone from
// the store is not kept (and said so), a store that cannot say fails.
func TestStillStored(t *testing.T) {
	ctx := context.Background()
	bx := index(3)
	mem := memory.NewStore("t")
	for _, p := range []int{0, 2} {
		data := []byte(fmt.Sprintf("pack %d", p))
		if err := mem.PutBlob(ctx, digest.FromBytes(data), int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	// Pack 0 is stored and worth keeping, 1 worth keeping but gone, 2
	// stored but not worth keeping.
	worth, not := packLife{files: 1, live: 3000, end: 3000}, packLife{files: 1, live: 600, end: 9000}
	life := []packLife{worth, worth, not}
	st := &statCounter{Store: mem, stats: map[digest.Digest]int{}}
	var logged []string
	keep, err := stillStored(ctx, st, bx.Packs, life, func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) })
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false}; !slices.Equal(keep, want) {
		t.Fatalf("keep %v, want %v", keep, want)
	}
	if st.stats[bx.Packs[2].Digest] != 0 || st.stats[bx.Packs[0].Digest] != 1 {
		t.Fatalf("stats %v", st.stats)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], bx.Packs[1].Digest.Short()+" is gone from the store") {
		t.Fatalf("logged %q", logged)
	}
	st.fail = bx.Packs[0].Digest
	if _, err := stillStored(ctx, st, bx.Packs, life, t.Logf); !errors.Is(err, errUnreachable) {
		t.Fatalf("a store that cannot answer: %v", err)
	}
	if keep, err := stillStored(ctx, st, nil, nil, t.Logf); keep != nil || err != nil {
		t.Fatalf("no base: %v, %v", keep, err)
	}
}

// TestBaseJoinSame: the join says the walk is the base's entry (so a
// no-op save reuses the base's index bytes and leaves the state as it is)
// only when every entry but the content of files is the same, position for
// position; any other difference gives a new index.
func TestBaseJoinSame(t *testing.T) {
	const no = archive.NoPack
	bx := index(1, f{"a", 10, 0}, f{"empty", 0, no}, f{"z", 3, 0})
	bx.Entries = append(bx.Entries, archive.Entry{Path: "zz-link", Type: archive.TypeSymlink, Link: "a", Pack: no})
	bx.IDs = append(bx.IDs, archive.FileID{})
	walk := func() *archive.Index {
		x := index(0, f{"a", 10, no}, f{"empty", 0, no}, f{"z", 3, no})
		x.Entries = append(x.Entries, archive.Entry{Path: "zz-link", Type: archive.TypeSymlink, Link: "a", Pack: no})
		x.IDs = append(x.IDs, archive.FileID{})
		return x
	}
	if b := joined(t, walk(), bx, bx.IDs); !b.same || !b.holds || len(b.files) != 2 || b.contentFiles != 2 || !slices.Equal(b.total, []int64{13}) {
		t.Fatalf("the walk of the base's own tree: same %v, holds %v, %d files of %d, totals %v", b.same, b.holds, len(b.files), b.contentFiles, b.total)
	}
	if b := joined(t, walk(), bx, nil); !b.same || b.holds {
		t.Fatalf("without records: same %v, holds %v, want the same index and a state to write", b.same, b.holds)
	}
	for _, tc := range []struct {
		name   string
		change func(x *archive.Index)
	}{
		{"a directory's mode", func(x *archive.Index) { x.Entries[0].Mode = 0o700 }},
		{"an empty file's mtime", func(x *archive.Index) { x.Entries[2].MTime++ }},
		{"a symlink's target", func(x *archive.Index) { x.Entries[4].Link = "z" }},
		{"a file's size", func(x *archive.Index) { x.Entries[1].Size++ }},
		{"a file's mode", func(x *archive.Index) { x.Entries[1].Mode = 0o600 }},
		{"a new file", func(x *archive.Index) {
			x.Entries = append(x.Entries, archive.Entry{Path: "zzz", Type: archive.TypeFile, Size: 1, Pack: no})
			x.IDs = append(x.IDs, archive.FileID{Ino: 50})
		}},
		{"a file gone", func(x *archive.Index) { x.Entries, x.IDs = slices.Delete(x.Entries, 3, 4), slices.Delete(x.IDs, 3, 4) }},
		{"another folder name", func(x *archive.Index) { x.Roots[0] = "other" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := walk()
			tc.change(x)
			if b := joined(t, x, bx, bx.IDs); b.same || b.holds {
				t.Fatalf("same %v, holds %v: want a new index", b.same, b.holds)
			}
		})
	}
	t.Run("a record that is not the walk's", func(t *testing.T) {
		x := walk()
		x.IDs[3].Ctime++
		if b := joined(t, x, bx, bx.IDs); !b.same || b.holds {
			t.Fatalf("same %v, holds %v: want the same index, and the state written again", b.same, b.holds)
		}
	})
	t.Run("an entry in a pack the base does not list", func(t *testing.T) {
		forged := index(1, f{"a", 10, 3})
		b := &base{name: "forged", x: forged}
		if err := b.join(walk()); err == nil || !strings.Contains(err.Error(), "pack 3 of 1") {
			t.Fatalf("join: %v, want the pack named", err)
		}
	})
	t.Run("a base of two folders", func(t *testing.T) {
		two := index(1, f{"a", 10, 0})
		two.Roots = append(two.Roots, "second")
		b := &base{name: "two", x: two}
		if err := b.join(walk()); err == nil || !strings.Contains(err.Error(), "2 folder(s), not 1") {
			t.Fatalf("join: %v", err)
		}
	})
}

// TestChangedFirstFileOfAPackRestores: the first file of a pack changes;
// the files after it are unchanged. The next entry keeps that pack (its
// dead file takes less than its live ones), though its tar stream holds the
// old file, past what the new index's files take, and the unchanged files'
// offsets are past it too: it restores, and gives the tree. It was damaged
// when packs half live were kept and a restore bounded a pack by what its
// named files take.
func TestChangedFirstFileOfAPackRestores(t *testing.T) {
	st := memory.NewStore("t")
	src, write := randomFiles(t)
	write("a-first", 60_000)
	for i := range 10 {
		write(fmt.Sprintf("b-%02d", i), 20_000)
	}
	save(t, st, "k1", src)
	write("a-first", 60_001)
	save(t, st, "k2", src)
	want := testtree.Snapshot(t, src, archive.StateFileName)
	dst := filepath.Join(t.TempDir(), "c")
	if res := restore(t, st, "k2", nil, dst); !res.Restored {
		t.Fatalf("the entry saved after the change does not restore: %s", res.MissReason)
	}
	if got := testtree.Snapshot(t, dst, archive.StateFileName); !maps.Equal(got, want) {
		t.Fatal("the restored tree is not the saved one")
	}
}

// TestDeadFilesAccumulateInAKeptPack: one file of a pack after another
// changes, an entry after each. The pack is kept while its dead files
// (before the live ones) take no more than about the live ones, each entry
// measured by the offsets the pack has kept since it was written, then
// packed again; every entry restores and gives its tree. A rule that
// measured a kept pack by its base's index alone would keep it past that
// (the base no longer names the files dead before it), and the restore
// would refuse it as damaged.
func TestDeadFilesAccumulateInAKeptPack(t *testing.T) {
	st := memory.NewStore("t")
	src, write := randomFiles(t)
	const files = 10
	for i := range files {
		write(fmt.Sprintf("f-%02d", i), 20_000)
	}
	save(t, st, "k0", src)
	ctx := context.Background()
	ref0, err := st.GetRef(ctx, "k0")
	if err != nil {
		t.Fatal(err)
	}
	first := ref0.Packs[0] // holds every file
	var kept []bool
	for gen := 1; gen < files; gen++ {
		write(fmt.Sprintf("f-%02d", gen-1), 20_001) // the first live file of the first pack
		key := fmt.Sprintf("k%d", gen)
		save(t, st, key, src)
		ref, err := st.GetRef(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, slices.Contains(ref.Packs, first))
		want := testtree.Snapshot(t, src, archive.StateFileName)
		dst := filepath.Join(t.TempDir(), "c")
		if r := restore(t, st, key, nil, dst); !r.Restored {
			t.Fatalf("%s (kept %v) does not restore: %s", key, kept, r.MissReason)
		}
		if got := testtree.Snapshot(t, dst, archive.StateFileName); !maps.Equal(got, want) {
			t.Fatalf("%s: the restored tree is not the saved one", key)
		}
	}
	// Kept at first, packed again once half of it is dead.
	if !kept[0] || !slices.Contains(kept, false) {
		t.Fatalf("the first pack kept, entry after entry: %v", kept)
	}
	t.Logf("the first pack kept, entry after entry: %v", kept)
}

// randomFiles makes a folder c and returns it, and a function that writes
// a file of n random bytes in it.
func randomFiles(t *testing.T) (string, func(name string, n int)) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "c")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	return src, func(name string, n int) {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
