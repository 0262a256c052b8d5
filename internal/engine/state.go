package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	fastjson "github.com/segmentio/encoding/json"
	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// stateFormat is the version of the restore state (docs/FORMAT.md): 3 is
// a line of JSON, then the index blob and the records as they are (2
// held both in the JSON, as base64 and arrays of numbers, which cost the
// whole file and its decoding in memory at once).
const stateFormat = 3

// maxStateHeader bounds the state's first line, its JSON header.
const maxStateHeader = 64 << 10

// recordSize is the size of one record in the state file: device, inode,
// ctime, little-endian.
const recordSize = 24

// maxState bounds the state file read from a folder.
const maxState = 1 << 30

// state is what a restore or a save leaves in each folder
// (archive.StateFileName) so that a later save or restore, in another
// step's container, knows what is on disk without reading it: the entry's
// index, and for each file with content of this folder, in index order, the
// identity (device, inode, ctime) it had when the entry's content was known
// to be on disk. A record proves a file unchanged only while the file's
// identity, size, mtime and mode are all the same and its ctime is before
// RacyBefore (a kernel-clock time taken after the record: see
// archive.KernelNow).
//
// The state lives in the workspace, which the build can write: it is
// untrusted. Every field is checked on reading, a save reuses packs only of
// a base index the store holds, and a record can at worst make a file that
// the build changed keep content of that legitimate base entry.
type state struct {
	Format     int           `json:"format"`
	Key        string        `json:"key"`
	Store      string        `json:"store,omitempty"`
	Written    time.Time     `json:"written"`
	Index      digest.Digest `json:"index"`
	IndexSize  int64         `json:"index_size"`
	Root       int           `json:"root"`
	RacyBefore int64         `json:"racy_before"`
	Records    int64         `json:"records"`
	// Entries is how many entries the index has (every folder's): the
	// size that earlier builds decode the index into (absent in older
	// states); this one streams the index and only writes it.
	Entries int64 `json:"entries,omitempty"`
	// After the header line: the index blob (left in the file, which
	// stays open: checked against Index when it is read), then the records.
	blob indexBlob
	// indexKnown: the index is one the reader already has (no blob).
	indexKnown bool
	Dev        []uint64 `json:"-"`
	Ino        []uint64 `json:"-"`
	Ctime      []int64  `json:"-"`
}

// folderState is the state of several folders read back and checked.
type folderState struct {
	Key   string
	Store string
	Index digest.Digest
	// blob is the index's bytes, in the state file (nothing when X is
	// have's): read, and checked against Index, only as it is visited or
	// written. Close the folderState when done.
	blob indexBlob
	X    *archive.Index
	// IDs holds, parallel to X.Entries, the trusted record of each file
	// with content (zero: none, the file must be read).
	IDs []archive.FileID
	// Folders counts the folders whose state was used.
	Folders int
	// recs, for a restore over another entry's state (readState's have is
	// another index), hold each folder's records while X is nil: known
	// reads the index from blob an entry at a time.
	recs []*state
}

// hasContent says whether e is a file whose content a record is about.
func hasContent(e *archive.Entry) bool { return e.Type == archive.TypeFile && e.Size > 0 }

// writeState records, in each folder, that the folders hold the entry of
// x (blob is its encoding), whose files have the identities ids (parallel
// to x.Entries), at time now. Records with a ctime not before racyBefore
// are left out. Each file is written under a temporary name and renamed, both relative to
// the folder's own descriptor without following links: a symlink planted at
// either name is replaced, never followed.
func writeState(folders []string, x *archive.Index, blob indexBlob, ids []archive.FileID, racyBefore int64, key, storeName string, now time.Time) error {
	idx := blob.digest
	for root, f := range folders {
		n := 0
		for i := range x.Entries {
			if e := &x.Entries[i]; e.Root == root && hasContent(e) {
				n++
			}
		}
		st := state{Format: stateFormat, Key: key, Store: storeName, Written: now.UTC(), Index: idx, IndexSize: blob.size, Root: root, RacyBefore: racyBefore, Records: int64(n), Entries: int64(len(x.Entries))}
		head, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		err = writeAt(f, archive.StateFileName, func(w *bufio.Writer) error {
			w.Write(head)
			w.WriteByte('\n')
			if err := blob.writeTo(w); err != nil {
				return err
			}
			var rec [recordSize]byte
			for i := range x.Entries {
				e := &x.Entries[i]
				if e.Root != root || !hasContent(e) {
					continue
				}
				var id archive.FileID
				if i < len(ids) && ids[i].Ctime < racyBefore {
					id = ids[i]
				}
				binary.LittleEndian.PutUint64(rec[0:], id.Dev)
				binary.LittleEndian.PutUint64(rec[8:], id.Ino)
				binary.LittleEndian.PutUint64(rec[16:], uint64(id.Ctime))
				w.Write(rec[:])
			}
			return w.Flush()
		})
		if err != nil {
			return fmt.Errorf("writing restore state in %s: %w", f, err)
		}
	}
	return nil
}

// indexBlob is an entry's index blob as the restore state stores it: its
// digest and size, and its bytes, in memory or in a file at off: a restore
// state's, or, during a restore of a large entry, an unlinked temporary
// file (spillIndex). Bytes from a file are checked against the digest as
// they are read.
type indexBlob struct {
	digest digest.Digest
	size   int64
	bytes  []byte
	file   *os.File
	off    int64
}

// at returns the blob's bytes as a ReaderAt, unchecked.
func (b indexBlob) at() io.ReaderAt {
	if b.file == nil {
		return bytes.NewReader(b.bytes)
	}
	return io.NewSectionReader(b.file, b.off, b.size)
}

// reader returns the blob's bytes, checked against its digest as they are
// read when they come from a file.
func (b indexBlob) reader() io.Reader {
	if b.file == nil {
		return bytes.NewReader(b.bytes)
	}
	return digest.NewVerifier(io.NewSectionReader(b.file, b.off, b.size), b.digest, b.size)
}

// blobOf holds b in memory.
func blobOf(b []byte) indexBlob {
	return indexBlob{digest: digest.FromBytes(b), size: int64(len(b)), bytes: b}
}

// spillAbove is the size past which a restore moves its index blob out of
// the heap while it extracts: 600,000 entries make a 28 MB blob, which the
// state needs only once the files are written.
var spillAbove = 4 << 20

// spillIndex returns b (whose digest is d, checked by the caller) held in
// an unlinked temporary file when it is larger than spillAbove, so that
// the caller may drop b; in memory when it is small, or when no temporary
// file can be written. Close it when done.
func spillIndex(b []byte, d digest.Digest) indexBlob {
	ib := indexBlob{digest: d, size: int64(len(b)), bytes: b}
	if len(b) <= spillAbove {
		return ib
	}
	f, err := os.CreateTemp("", "tekton-cache-index-")
	if err != nil {
		return ib
	}
	os.Remove(f.Name()) //nolint:errcheck // unlinked at once: nothing is left behind, whatever ends the process
	if _, err := f.Write(b); err != nil {
		f.Close()
		return ib
	}
	return indexBlob{digest: d, size: ib.size, file: f}
}

// writeTo writes the blob to w. Read back from its file, it is checked
// against its digest as it goes: a state whose bytes are not the index it
// names is not written.
func (b indexBlob) writeTo(w io.Writer) error {
	if b.file == nil {
		_, err := w.Write(b.bytes)
		return err
	}
	if _, err := io.Copy(w, b.reader()); err != nil {
		return fmt.Errorf("reading back the index: %w", err)
	}
	return nil
}

// close closes the blob's file, if any.
func (b indexBlob) close() {
	if b.file != nil {
		b.file.Close()
	}
}

// writeAt writes dir/name, through write, via a temporary file, without
// following symlinks at either name.
func writeAt(dir, name string, write func(w *bufio.Writer) error) error {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	tmp := archive.TempPrefix + "state-" + fmt.Sprint(os.Getpid(), "-", time.Now().UnixNano())
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = write(bufio.NewWriterSize(f, 256<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0) //nolint:errcheck // best effort
	}
	return err
}

// readState reads the state of each folder and checks it: format, the
// index against its digest, the folder's position, the record counts. All
// folders that have a state must name the same index. It returns nil and
// why when there is nothing usable (a save then reads every file).
//
// have, when set, is an entry already read and checked (the one a restore
// is about to write): a state of that same index (by digest) takes have's
// index instead of reading and decoding its own copy, the common warm
// restore, which then holds one index in memory, not two.
func readState(folders []string, have *Entry) (*folderState, string) {
	var fs *folderState
	var why string
	var known digest.Digest
	if have != nil {
		known = have.Ref.Index.Digest
	}
	for root, f := range folders {
		st, err := readStateFile(f, known)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			if err = st.check(root, len(folders)); err != nil {
				st.blob.close()
			}
		}
		if err != nil {
			why = fmt.Sprintf("the restore state in %s is not usable (%v)", f, err)
			continue
		}
		if fs != nil {
			st.blob.close() // fs has its index's bytes
		}
		if fs == nil && st.indexKnown {
			if st.IndexSize != have.Ref.Index.Size {
				why = fmt.Sprintf("the restore state in %s is not usable (its index is %d bytes, not %d)", f, st.IndexSize, have.Ref.Index.Size)
				continue
			}
			fs = &folderState{Key: st.Key, Store: st.Store, Index: st.Index, X: have.Index, IDs: make([]archive.FileID, len(have.Index.Entries))}
		} else if fs == nil {
			// Another entry's state (a restore), or the state a save
			// reuses files from: its index is read only when it is joined
			// to the new one (known, base.join), an entry at a time, never
			// held whole.
			fs = &folderState{Key: st.Key, Store: st.Store, Index: st.Index, blob: st.blob, recs: make([]*state, len(folders))}
		} else if st.Index != fs.Index {
			fs.close()
			return nil, fmt.Sprintf("the folders hold the states of different entries (%s and %s)", fs.Key, st.Key)
		}
		if fs.X == nil {
			fs.recs[root] = st // checked against the index by known
		} else if err := fs.take(root, st); err != nil {
			why = fmt.Sprintf("the restore state in %s is not usable (%v)", f, err)
			continue
		}
		fs.Folders++
	}
	if fs == nil && why == "" {
		why = "no restore state in the folders"
	}
	return fs, why
}

// readStateFile reads the state in dir. Its index blob is skipped, and
// left nil, when the header names index known (the caller has that index).
func readStateFile(dir string, known digest.Digest) (*state, error) {
	fd, err := unix.Open(filepath.Join(dir, archive.StateFileName), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, os.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), archive.StateFileName)
	keep := false // the file holds the blob returned
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxState {
		return nil, errors.New("not a regular file of a sensible size")
	}
	r := bufio.NewReaderSize(f, maxStateHeader)
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF) {
		return nil, errors.New("no header line (a state of format 2 or older, or not a state)")
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := fastjson.Unmarshal(line, &st); err != nil {
		return nil, err
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("format %d, this build reads %d", st.Format, stateFormat)
	}
	// The sizes the header gives must be the file's, to the byte, before
	// anything is allocated from them.
	rest := fi.Size() - int64(len(line))
	if st.IndexSize < 0 || st.Records < 0 || st.IndexSize > rest || st.Records > (rest-st.IndexSize)/recordSize || st.IndexSize+st.Records*recordSize != rest {
		return nil, fmt.Errorf("its header says %d bytes of index and %d records, the file holds %d bytes after it", st.IndexSize, st.Records, rest)
	}
	// The blob stays in the file (read, and checked, when it is visited);
	// the records after it are read now.
	st.indexKnown = known != "" && st.Index == known
	if _, err := f.Seek(int64(len(line))+st.IndexSize, io.SeekStart); err != nil {
		return nil, err
	}
	r.Reset(f)
	st.Dev, st.Ino, st.Ctime = make([]uint64, st.Records), make([]uint64, st.Records), make([]int64, st.Records)
	var rec [recordSize]byte
	for i := range st.Records {
		if _, err := io.ReadFull(r, rec[:]); err != nil {
			return nil, err
		}
		st.Dev[i], st.Ino[i], st.Ctime[i] = binary.LittleEndian.Uint64(rec[0:]), binary.LittleEndian.Uint64(rec[8:]), int64(binary.LittleEndian.Uint64(rec[16:]))
	}
	if n, _ := r.Read(rec[:1]); n != 0 {
		return nil, errors.New("it grew while it was read")
	}
	if !st.indexKnown {
		st.blob = indexBlob{digest: st.Index, size: st.IndexSize, file: f, off: int64(len(line))}
		keep = true
	}
	return &st, nil
}

func (st *state) check(root, folders int) error {
	switch {
	case st.Format != stateFormat:
		return fmt.Errorf("format %d, this build reads %d", st.Format, stateFormat)
	case st.Index.Validate() != nil:
		return errors.New("its index digest is not valid")
	case st.Root != root || root >= folders:
		return fmt.Errorf("it is of folder %d, given as folder %d", st.Root, root)
	case len(st.Ino) != len(st.Dev) || len(st.Ctime) != len(st.Dev):
		return errors.New("its records are inconsistent")
	}
	return nil
}

// close closes the state file that holds fs's index, if any.
func (fs *folderState) close() { fs.blob.close() }

// take sets the records of root from st (already checked against fs's index).
func (fs *folderState) take(root int, st *state) error {
	n := 0
	for i := range fs.X.Entries {
		if e := &fs.X.Entries[i]; e.Root == root && hasContent(e) {
			n++
		}
	}
	if n != len(st.Ino) {
		return fmt.Errorf("%d records for %d files", len(st.Ino), n)
	}
	k := 0
	for i := range fs.X.Entries {
		e := &fs.X.Entries[i]
		if e.Root != root || !hasContent(e) {
			continue
		}
		id := archive.FileID{Dev: st.Dev[k], Ino: st.Ino[k], Ctime: st.Ctime[k]}
		k++
		if id.Ino != 0 && id.Ctime < st.RacyBefore {
			fs.IDs[i] = id
		}
	}
	return nil
}

// proven reports whether the file walked as (id, e) is, by its record,
// exactly base entry b: same identity, size, mtime and mode.
func proven(rec archive.FileID, id archive.FileID, e, b *archive.Entry) bool {
	return !rec.IsZero() && rec == id && b.Size == e.Size && b.MTime == e.MTime && b.Mode == e.Mode
}

// known returns, for the Extractor of index x (the entry readState was
// given as have), what the state proves about the files on disk: the
// digest of a file whose identity and metadata are exactly as recorded,
// else the zero Sum. When x is the state's own index (a restore of the entry the
// folders hold), entry i is looked up by position. Else the state's index
// is read from its blob an entry at a time and joined to x by folder and
// path in one pass over both in Sort's order (the order of every index
// this tool writes; an index in another order only loses proofs, and its
// files are hashed): what is kept is the proofs alone, never the state's
// index (at 600,000 entries, one index less held during the restore).
func (fs *folderState) known(x *archive.Index) func(i int, id archive.FileID, size, mtime int64, mode uint32) digest.Sum {
	if fs.X != nil && x == fs.X {
		ids := fs.IDs // not fs: its blob is not held for the restore's length
		return func(i int, id archive.FileID, size, mtime int64, mode uint32) digest.Sum {
			b := &x.Entries[i]
			if hasContent(b) && proven(ids[i], id, &archive.Entry{Size: size, MTime: mtime, Mode: mode}, b) {
				return b.Digest
			}
			return digest.Sum{}
		}
	}
	if fs.X != nil || fs.recs == nil {
		// The state of have's index, asked about another: nothing it
		// proves is joined.
		return func(int, archive.FileID, int64, int64, uint32) digest.Sum { return digest.Sum{} }
	}
	at := make([]int32, len(x.Entries)) // 1 + the position in proofs; 0: none
	files, empty := CountFiles(x)
	proofs := make([]proof, 0, files-empty) // at most one a file: sized once
	var others []digest.Sum
	m := joiner{x: x}
	_, err := fs.visit(func(pos int, b *archive.Entry, rec archive.FileID) error {
		if pos == 0 {
			clear(at)
			proofs, others, m.i = proofs[:0], others[:0], 0
		}
		i := m.match(b)
		if i < 0 || rec.IsZero() || len(proofs) >= math.MaxInt32 {
			return nil
		}
		p := proof{rec: rec, size: b.Size, mtime: b.MTime, mode: b.Mode}
		if b.Digest != x.Entries[i].Digest {
			// What the file held is not the new entry's: kept (a few
			// files of a warm restore), so that it is rewritten unread.
			others = append(others, b.Digest)
			p.other = int32(len(others))
		}
		proofs = append(proofs, p)
		at[i] = int32(len(proofs))
		return nil
	})
	if err != nil {
		return func(int, archive.FileID, int64, int64, uint32) digest.Sum { return digest.Sum{} }
	}
	return func(i int, id archive.FileID, size, mtime int64, mode uint32) digest.Sum {
		if at[i] == 0 {
			return digest.Sum{}
		}
		p := &proofs[at[i]-1]
		if !proven(p.rec, id, &archive.Entry{Size: size, MTime: mtime, Mode: mode}, &archive.Entry{Size: p.size, MTime: p.mtime, Mode: p.mode}) {
			return digest.Sum{}
		}
		if p.other != 0 {
			return others[p.other-1]
		}
		return x.Entries[i].Digest
	}
}

// proof is what a state proves of one file of another index: its record
// and the metadata it had then, when it held the content of the new
// index's entry (other is 0) or another (1 + its position in others).
type proof struct {
	rec   archive.FileID
	size  int64
	mtime int64
	mode  uint32
	other int32
}

// visit reads the state's index from its blob an entry at a time and gives
// each entry, with its position and its record (zero: none, or not
// trusted), to f: each folder's records are taken in order by its files
// with content, as take does. Position 0 may come twice (see
// archive.VisitIndex): f starts over then. It fails when the records and
// the index disagree, or the index does not decode or has another number
// of folders than the state.
func (fs *folderState) visit(f func(pos int, e *archive.Entry, rec archive.FileID) error) (*archive.Index, error) {
	next := make([]int, len(fs.recs)) // per folder, its next record
	px, err := archive.VisitIndexAt(fs.blob.at(), fs.blob.size, fs.Index, func(pos int, b *archive.Entry) error {
		if pos == 0 {
			clear(next)
		}
		if b.Root < 0 || b.Root >= len(fs.recs) {
			return errors.New("an entry of another folder")
		}
		var rec archive.FileID
		if st := fs.recs[b.Root]; st != nil && hasContent(b) {
			k := next[b.Root]
			if k >= len(st.Ino) {
				return errors.New("more files than records")
			}
			next[b.Root]++
			if st.Ino[k] != 0 && st.Ctime[k] < st.RacyBefore {
				rec = archive.FileID{Dev: st.Dev[k], Ino: st.Ino[k], Ctime: st.Ctime[k]}
			}
		}
		return f(pos, b, rec)
	})
	if err != nil {
		return nil, err
	}
	if len(px.Roots) != len(fs.recs) {
		return nil, fmt.Errorf("its entry has %d folder(s), not %d", len(px.Roots), len(fs.recs))
	}
	for root, st := range fs.recs {
		if st != nil && next[root] != len(st.Ino) {
			return nil, fmt.Errorf("%d records for %d files", len(st.Ino), next[root])
		}
	}
	return px, nil
}

// settle waits (a few milliseconds at most) until the kernel clock has
// passed every ctime in ids, so that none of them is racy, and returns the
// time to record as RacyBefore.
func settle(ids []archive.FileID) int64 {
	var newest int64
	for _, id := range ids {
		newest = max(newest, id.Ctime)
	}
	now := archive.KernelNow()
	for deadline := time.Now().Add(100 * time.Millisecond); now <= newest && time.Now().Before(deadline); now = archive.KernelNow() {
		time.Sleep(time.Millisecond)
	}
	return now
}
