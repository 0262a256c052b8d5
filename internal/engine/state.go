package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	fastjson "github.com/segmentio/encoding/json"
	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// stateFormat is the version of the restore state (docs/FORMAT.md).
const stateFormat = 2

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
	Blob       []byte        `json:"index_blob"`
	Root       int           `json:"root"`
	RacyBefore int64         `json:"racy_before"`
	Dev        []uint64      `json:"dev"`
	Ino        []uint64      `json:"ino"`
	Ctime      []int64       `json:"ctime"`
}

// folderState is the state of several folders read back and checked.
type folderState struct {
	Key   string
	Store string
	Index digest.Digest
	Blob  []byte
	X     *archive.Index
	// IDs holds, parallel to X.Entries, the trusted record of each file
	// with content (zero: none, the file must be read).
	IDs []archive.FileID
	// Folders counts the folders whose state was used.
	Folders int
}

// hasContent says whether e is a file whose content a record is about.
func hasContent(e *archive.Entry) bool { return e.Type == archive.TypeFile && e.Size > 0 }

// writeState records, in each folder, that the folders hold the entry of
// x (blob is its encoding), whose files have the identities ids (parallel
// to x.Entries), at time now. Records with a ctime not before racyBefore
// are left out. Each file is written under a temporary name and renamed, both relative to
// the folder's own descriptor without following links: a symlink planted at
// either name is replaced, never followed.
func writeState(folders []string, x *archive.Index, blob []byte, ids []archive.FileID, racyBefore int64, key, storeName string, now time.Time) error {
	idx := digest.FromBytes(blob)
	for root, f := range folders {
		st := state{Format: stateFormat, Key: key, Store: storeName, Written: now.UTC(), Index: idx, Blob: blob, Root: root, RacyBefore: racyBefore}
		for i := range x.Entries {
			e := &x.Entries[i]
			if e.Root != root || !hasContent(e) {
				continue
			}
			var id archive.FileID
			if i < len(ids) && ids[i].Ctime < racyBefore {
				id = ids[i]
			}
			st.Dev, st.Ino, st.Ctime = append(st.Dev, id.Dev), append(st.Ino, id.Ino), append(st.Ctime, id.Ctime)
		}
		data, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		if err := writeAt(f, archive.StateFileName, data); err != nil {
			return fmt.Errorf("writing restore state in %s: %w", f, err)
		}
	}
	return nil
}

// writeAt writes data to dir/name through a temporary file, without
// following symlinks at either name.
func writeAt(dir, name string, data []byte) error {
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
	_, err = f.Write(data)
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
func readState(folders []string) (*folderState, string) {
	var fs *folderState
	var why string
	for root, f := range folders {
		st, err := readStateFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			err = st.check(root, len(folders))
		}
		if err != nil {
			why = fmt.Sprintf("the restore state in %s is not usable (%v)", f, err)
			continue
		}
		if fs == nil {
			x, err := archive.DecodeIndex(st.Blob)
			if err == nil && len(x.Roots) != len(folders) {
				err = fmt.Errorf("its entry has %d folder(s), not %d", len(x.Roots), len(folders))
			}
			if err != nil {
				why = fmt.Sprintf("the restore state in %s is not usable (%v)", f, err)
				continue
			}
			fs = &folderState{Key: st.Key, Store: st.Store, Index: st.Index, Blob: st.Blob, X: x, IDs: make([]archive.FileID, len(x.Entries))}
		} else if st.Index != fs.Index {
			return nil, fmt.Sprintf("the folders hold the states of different entries (%s and %s)", fs.Key, st.Key)
		}
		if err := fs.take(root, st); err != nil {
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

func readStateFile(dir string) (*state, error) {
	fd, err := unix.Open(filepath.Join(dir, archive.StateFileName), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, os.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), archive.StateFileName)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxState {
		return nil, errors.New("not a regular file of a sensible size")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxState))
	if err != nil {
		return nil, err
	}
	var st state
	if err := fastjson.Unmarshal(data, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (st *state) check(root, folders int) error {
	switch {
	case st.Format != stateFormat:
		return fmt.Errorf("format %d, this build reads %d", st.Format, stateFormat)
	case st.Index.Validate() != nil || digest.FromBytes(st.Blob) != st.Index:
		return errors.New("its index does not match its digest")
	case st.Root != root || root >= folders:
		return fmt.Errorf("it is of folder %d, given as folder %d", st.Root, root)
	case len(st.Ino) != len(st.Dev) || len(st.Ctime) != len(st.Dev):
		return errors.New("its records are inconsistent")
	}
	return nil
}

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

// known returns, for the Extractor, what the state proves about the files on
// disk: the digest of a file whose identity and metadata are exactly as
// recorded, else "".
func (fs *folderState) known() func(root int, path string, id archive.FileID, size, mtime int64, mode uint32) string {
	type key struct {
		root int
		path string
	}
	at := make(map[key]int, len(fs.X.Entries))
	for i := range fs.X.Entries {
		if e := &fs.X.Entries[i]; hasContent(e) && !fs.IDs[i].IsZero() {
			at[key{e.Root, e.Path}] = i
		}
	}
	return func(root int, path string, id archive.FileID, size, mtime int64, mode uint32) string {
		i, ok := at[key{root, path}]
		if !ok {
			return ""
		}
		b := &fs.X.Entries[i]
		if proven(fs.IDs[i], id, &archive.Entry{Size: size, MTime: mtime, Mode: mode}, b) {
			return b.Digest
		}
		return ""
	}
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
