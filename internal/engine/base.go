package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// base is the entry a save reuses unchanged files from, and what the
// save's planning knows of it once joined to the walk (join). A base read
// from the restore state is never decoded whole: its index is streamed from
// its blob, an entry at a time, and only what the walk can reuse is kept
// (at 600,000 entries, one index less held during a no-op save).
type base struct {
	name string
	blob indexBlob // its index, encoded (in the state file, for a state's)
	// Where its entries come from: the restore state in the folders (fs:
	// its index streamed, its records per folder), or an index decoded
	// whole (x: a base found by restore key, whose files are all hashed
	// unless ids, parallel to x.Entries, has records for them).
	fs  *folderState
	x   *archive.Index
	ids []archive.FileID

	// What join found.
	packs []format.Descriptor
	// at holds, per entry of the walk, 1 + the position in files of the
	// base file at its folder and path that it may reuse, or 0.
	at    []int32
	files []baseFile
	// total is, per base pack, the bytes of the files it holds.
	total []int64
	// same: the base's entries are the walk's, position for position,
	// but for the digest, pack and offset of files with content (which a
	// save reuses); holds: and each of those files' records is the
	// identity the walk saw.
	same, holds bool
	// contentFiles counts the walk's files with content.
	contentFiles int
}

// baseFile is what a save needs of a base file the walk may reuse (48
// bytes, its digest among them).
type baseFile struct {
	digest digest.Sum
	offset int64
	pack   int32
	// proven: the state's record of the file is the identity the walk
	// saw, with the same size, mtime and mode; else the file is hashed.
	proven bool
}

// maxBasePacks bounds the pack numbers a base's entries may give before
// its list of packs is read (it comes after the entries in the stream).
const maxBasePacks = 1 << 20

// ok reports whether b has an index (join may still refuse it).
func (b *base) ok() bool { return b.fs != nil || b.x != nil }

// join reads the base's entries once, in order, beside the walk's index x
// (both in Sort's order: an index in another order only loses matches,
// and its files are packed anew), and fills at, files, total, same and
// holds. A base whose entries do not hold together (another number of
// folders, records that do not match its files, a pack past its list) is
// an error: the save then uses none.
func (b *base) join(x *archive.Index) error {
	b.at = make([]int32, len(x.Entries))
	files, empty := CountFiles(x)
	b.contentFiles = files - empty
	// At most one base file per file of the walk: sized once.
	b.files = make([]baseFile, 0, b.contentFiles)
	ids := len(x.IDs) == len(x.Entries)
	m := joiner{x: x}
	var n int // entries seen
	b.same, b.holds = true, ids
	visit := func(pos int, e *archive.Entry, rec archive.FileID) error {
		if pos == 0 { // (again, if the index was read whole after all)
			clear(b.at)
			b.files, b.total, m.i = b.files[:0], b.total[:0], 0
			b.same, b.holds = true, ids
		}
		n = pos + 1
		if e.Size < 0 {
			return fmt.Errorf("entry %q has a negative size", e.Path)
		}
		if e.Pack >= 0 {
			if e.Pack >= maxBasePacks {
				return fmt.Errorf("entry %q is in pack %d, past any index's", e.Path, e.Pack)
			}
			if e.Pack >= len(b.total) {
				b.total = append(b.total, make([]int64, e.Pack+1-len(b.total))...)
			}
			b.total[e.Pack] += e.Size
		}
		i := m.match(e)
		if b.same && (i != pos || !sameButContent(&x.Entries[i], e)) {
			b.same = false
		}
		if i < 0 {
			return nil
		}
		w := &x.Entries[i]
		if w.Type != archive.TypeFile || e.Type != archive.TypeFile || w.Size == 0 || e.Size != w.Size || e.Pack < 0 || e.Digest.IsZero() || len(b.files) >= math.MaxInt32 {
			if hasContent(w) {
				b.same = false
			}
			return nil
		}
		same := ids && !rec.IsZero() && rec == x.IDs[i]
		b.files = append(b.files, baseFile{digest: e.Digest, offset: e.Offset, pack: int32(e.Pack), proven: same && proven(rec, x.IDs[i], w, e)})
		b.at[i] = int32(len(b.files))
		b.holds = b.holds && same
		return nil
	}
	var bx *archive.Index
	var err error
	if b.fs != nil {
		bx, err = b.fs.visit(visit)
	} else {
		bx = b.x
		if len(b.ids) != 0 && len(b.ids) != len(b.x.Entries) {
			return errors.New("its records do not match its entries")
		}
		for pos := range b.x.Entries {
			var rec archive.FileID
			if b.ids != nil {
				rec = b.ids[pos]
			}
			if err = visit(pos, &b.x.Entries[pos], rec); err != nil {
				break
			}
		}
	}
	switch {
	case err != nil:
		return err
	case len(bx.Roots) != len(x.Roots):
		return fmt.Errorf("its entry has %d folder(s), not %d", len(bx.Roots), len(x.Roots))
	case len(b.total) > len(bx.Packs):
		return fmt.Errorf("an entry is in pack %d of %d", len(b.total)-1, len(bx.Packs))
	}
	b.packs = bx.Packs
	b.fs, b.x, b.ids = nil, nil, nil // what the plan needs is the join's
	b.total = append(b.total, make([]int64, len(bx.Packs)-len(b.total))...)
	b.same = b.same && n == len(x.Entries) && bx.Format == x.Format && slices.Equal(bx.Roots, x.Roots)
	b.holds = b.holds && b.same && len(b.files) == b.contentFiles
	return nil
}

// sameButContent reports whether the walked entry w is the base entry e
// but for what a save gives a file with content from its base (digest,
// pack and offset).
func sameButContent(w, e *archive.Entry) bool {
	if w.Root != e.Root || w.Path != e.Path || w.Type != e.Type || w.Mode != e.Mode || w.MTime != e.MTime || w.Size != e.Size || w.Link != e.Link {
		return false
	}
	return hasContent(e) || w.Digest == e.Digest && w.Pack == e.Pack && w.Offset == e.Offset
}

// joiner finds, for the entries of another index given in Sort's order,
// the entry of x at the same folder and path, in one pass over x.
type joiner struct {
	x *archive.Index
	i int // the entry of x the other index is at
}

// match returns the position in x of e's folder and path, or -1.
func (m *joiner) match(e *archive.Entry) int {
	for m.i < len(m.x.Entries) && archive.CompareEntries(&m.x.Entries[m.i], e) < 0 {
		m.i++
	}
	if m.i < len(m.x.Entries) && archive.CompareEntries(&m.x.Entries[m.i], e) == 0 {
		m.i++
		return m.i - 1
	}
	return -1
}
