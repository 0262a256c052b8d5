package archive

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Extractor restores an index into folders, safely and all-or-nothing:
//
//   - every path is opened one component at a time with O_NOFOLLOW from the
//     folder's own descriptor, so nothing is ever written through a symlink
//     or outside the folder, whatever the index or the disk holds;
//   - file content is written to temporary files and checked (size and
//     sha256) before Commit renames them into place; Abort removes them and
//     the directories it created, leaving the folders as they were;
//   - in a directory the extractor created itself (a cold restore), files
//     are written under their final names: nobody else has anything there,
//     and Abort removes them with the directory. This saves a rename and a
//     stat per file;
//   - files already on disk with the same size, mtime and mode are kept.
//
// Use: NewExtractor, Prepare, ExtractPack for each of NeededPacks (in
// parallel if you like), then Commit or Abort, then Close.
type Extractor struct {
	x       *Index
	dests   []string
	rootFDs []int
	roots   []*os.Root

	needed  []need // per entry: whether and how content must be written
	present int
	umask   uint32

	mu      sync.Mutex
	created []createdDir // directories made by Prepare, parents first
	// fresh holds the directories made by Prepare (and the root, "", of
	// folders that did not exist): they held nothing of anyone else's.
	fresh   map[createdDir]bool
	pending []pendingFile
	written int64
}

// need says whether an entry's content must be written, and how.
type need uint8

const (
	needNone   need = iota
	needTemp        // under a temporary name, renamed at Commit
	needDirect      // under its final name, in a fresh directory
)

type createdDir struct {
	root int
	rel  string
}

type pendingFile struct {
	root int
	dir  string // rel path of the parent ("" for the root)
	tmp  string // equals name when written directly
	name string
}

// NewExtractor opens (creating them if needed) the destination folders, one
// per root of x, in order.
func NewExtractor(x *Index, dests []string) (*Extractor, error) {
	if len(dests) != len(x.Roots) {
		return nil, fmt.Errorf("the entry holds %d folder(s) (%v) but %d were given to restore into", len(x.Roots), x.Roots, len(dests))
	}
	ex := &Extractor{x: x, dests: dests, needed: make([]need, len(x.Entries)), umask: umask(), fresh: map[createdDir]bool{}}
	for i, d := range dests {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			ex.fresh[createdDir{i, ""}] = true
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			ex.Close()
			return nil, fmt.Errorf("creating folder %s: %w", d, err)
		}
		fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			ex.Close()
			return nil, fmt.Errorf("opening folder %s: %w", d, err)
		}
		ex.rootFDs = append(ex.rootFDs, fd)
		r, err := os.OpenRoot(d)
		if err != nil {
			ex.Close()
			return nil, fmt.Errorf("opening folder %s: %w", d, err)
		}
		ex.roots = append(ex.roots, r)
	}
	return ex, nil
}

// Close releases the folders' descriptors.
func (ex *Extractor) Close() {
	for _, fd := range ex.rootFDs {
		unix.Close(fd)
	}
	for _, r := range ex.roots {
		r.Close()
	}
	ex.rootFDs, ex.roots = nil, nil
}

// dirFDs caches open directory descriptors for one goroutine.
type dirFDs struct {
	ex    *Extractor
	cache map[createdDir]int
}

func (ex *Extractor) newDirFDs() *dirFDs { return &dirFDs{ex: ex, cache: map[createdDir]int{}} }

func (d *dirFDs) close() {
	for _, fd := range d.cache {
		unix.Close(fd)
	}
	clear(d.cache)
}

// fd returns a descriptor of the directory rel of root, opening each
// component with O_NOFOLLOW. With create, missing components are made and
// non-directories in the way are removed.
func (d *dirFDs) fd(root int, rel string, create bool) (int, error) {
	if rel == "" || rel == "." {
		return d.ex.rootFDs[root], nil
	}
	k := createdDir{root, rel}
	if fd, ok := d.cache[k]; ok {
		return fd, nil
	}
	parent, base := path.Split(rel)
	pfd, err := d.fd(root, path.Clean(parent), create)
	if err != nil {
		return -1, err
	}
	fd, err := openDirAt(pfd, base)
	if err != nil && create {
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(pfd, base, 0o700); err == nil {
				d.ex.mu.Lock()
				d.ex.created = append(d.ex.created, k)
				d.ex.fresh[k] = true
				d.ex.mu.Unlock()
			}
		} else if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			// A file or symlink where the entry has a directory: replace it.
			if err = unix.Unlinkat(pfd, base, 0); err == nil {
				err = unix.Mkdirat(pfd, base, 0o700)
			}
		}
		if err == nil {
			fd, err = openDirAt(pfd, base)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("opening directory %s in %s: %w", rel, d.ex.dests[root], err)
	}
	if len(d.cache) >= 256 {
		d.close()
	}
	d.cache[k] = fd
	return fd, nil
}

// parent returns a descriptor of the directory that holds e, and its path
// ("" for the root).
func (d *dirFDs) parent(e *Entry) (int, string, error) {
	dir := parentDir(e.Path)
	fd, err := d.fd(e.Root, dir, false)
	return fd, dir, err
}

// parentDir is the directory of an entry path, "" for the root.
func parentDir(p string) string {
	dir := path.Dir(p)
	if dir == "." {
		return ""
	}
	return dir
}

func openDirAt(pfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// Prepare creates the directories of the index and finds which files must be
// written. It returns the packs that hold them.
func (ex *Extractor) Prepare() ([]int, error) {
	dirs := ex.newDirFDs()
	defer dirs.close()
	packs := map[int]bool{}
	for i := range ex.x.Entries {
		e := &ex.x.Entries[i]
		switch e.Type {
		case TypeDir:
			fd, err := dirs.fd(e.Root, e.Path, true)
			if err != nil {
				return nil, err
			}
			// Existing read-only directories (a Go module cache) must take
			// new files; Commit sets the final mode.
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err == nil && st.Mode&0o200 == 0 {
				unix.Fchmod(fd, (st.Mode&0o777)|0o700) //nolint:errcheck // Commit reports mode errors
			}
		case TypeFile:
			if e.Size == 0 {
				continue
			}
			dir := parentDir(e.Path)
			pfd, err := dirs.fd(e.Root, dir, true)
			if err != nil {
				return nil, err
			}
			if ex.fresh[createdDir{e.Root, dir}] {
				ex.needed[i] = needDirect
				packs[e.Pack] = true
				continue
			}
			var st unix.Stat_t
			err = unix.Fstatat(pfd, path.Base(e.Path), &st, unix.AT_SYMLINK_NOFOLLOW)
			if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == e.Size &&
				uint32(st.Mode&0o777) == e.Mode && st.Mtim.Nano() == e.MTime {
				ex.present++
				continue
			}
			ex.needed[i] = needTemp
			packs[e.Pack] = true
		}
	}
	out := make([]int, 0, len(packs))
	for p := range packs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// Present is the number of files Prepare found already in place.
func (ex *Extractor) Present() int { return ex.present }

// Written is the number of content bytes written so far.
func (ex *Extractor) Written() int64 {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	return ex.written
}

// umask returns the process umask (set once at start by the runtime's
// caller; reading it means setting it, so it is read once).
var umask = sync.OnceValue(func() uint32 {
	old := unix.Umask(0)
	unix.Umask(old)
	return uint32(old)
})

func tempName() string {
	var b [8]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand does not fail
	return TempPrefix + hex.EncodeToString(b[:])
}

// ExtractPack writes the needed files of pack p from its tar stream. Each
// file's size and sha256 are checked against the index; a tar entry the
// index does not need is skipped. Files land under temporary names until
// Commit.
func (ex *Extractor) ExtractPack(p int, tr *tar.Reader) error {
	want := map[string]int{}
	for i := range ex.x.Entries {
		if ex.needed[i] != needNone && ex.x.Entries[i].Pack == p {
			want[ex.x.TarName(&ex.x.Entries[i])] = i
		}
	}
	dirs := ex.newDirFDs()
	defer dirs.close()
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	h := sha256.New()
	for len(want) > 0 {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading pack %d: %w", p, err)
		}
		i, ok := want[hdr.Name]
		if !ok {
			continue
		}
		delete(want, hdr.Name)
		e := &ex.x.Entries[i]
		if hdr.Typeflag != tar.TypeReg {
			return unsafeErr(e, "pack %d holds it as tar type %q, not a regular file", p, hdr.Typeflag)
		}
		if hdr.Size != e.Size {
			return unsafeErr(e, "size lies: the index says %d bytes, pack %d says %d", e.Size, p, hdr.Size)
		}
		pfd, dir, err := dirs.parent(e)
		if err != nil {
			return err
		}
		tmp := path.Base(e.Path)
		if ex.needed[i] == needTemp {
			tmp = tempName()
		}
		// Created with its final mode: a chmod is needed only when the
		// umask took bits away.
		fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Mode)
		if err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
		f := rawFile(fd)
		ex.mu.Lock()
		ex.pending = append(ex.pending, pendingFile{root: e.Root, dir: dir, tmp: tmp, name: path.Base(e.Path)})
		ex.mu.Unlock()
		h.Reset()
		n, err := io.CopyBuffer(io.MultiWriter(f, h), tr, *bufp)
		if err == nil && n != e.Size {
			err = unsafeErr(e, "size lies: got %d bytes, want %d", n, e.Size)
		}
		if err == nil {
			if got := hex.EncodeToString(h.Sum(nil)); got != e.Digest {
				err = fmt.Errorf("%w: %s: content sha256 %s, index says %s", ErrCorrupt, e.Path, got[:12], e.Digest[:12])
			}
		}
		if err == nil && e.Mode&ex.umask != 0 {
			err = unix.Fchmod(fd, e.Mode)
		}
		if err == nil {
			ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
			err = unix.UtimesNanoAt(pfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restoring %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
		ex.mu.Lock()
		ex.written += n
		ex.mu.Unlock()
	}
	if len(want) > 0 {
		var missing []string
		for n := range want {
			missing = append(missing, n)
		}
		slices.Sort(missing)
		return fmt.Errorf("%w: pack %d lacks %d file(s) the index puts there, e.g. %q", ErrCorrupt, p, len(missing), missing[0])
	}
	return nil
}

// ErrCorrupt is wrapped by errors of content that does not match the index.
var ErrCorrupt = errors.New("corrupt entry")

// Commit renames the written files into place, then writes symlinks and
// empty files, then sets directory modes and mtimes, deepest first.
func (ex *Extractor) Commit() error {
	// Renames of tens of thousands of files: two at a time, each half in
	// path order so that directory descriptors are reused.
	renames := make([]pendingFile, 0, len(ex.pending))
	for _, pf := range ex.pending {
		if pf.tmp != pf.name {
			renames = append(renames, pf)
		}
	}
	var g errgroup.Group
	half := len(renames) / 2
	for _, part := range [][]pendingFile{renames[:half], renames[half:]} {
		g.Go(func() error {
			dirs := ex.newDirFDs()
			defer dirs.close()
			for _, pf := range part {
				pfd, err := dirs.fd(pf.root, pf.dir, false)
				if err != nil {
					return err
				}
				if err := ex.renameInto(pfd, pf.root, pf.dir, pf.tmp, pf.name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	ex.pending = nil
	dirs := ex.newDirFDs()
	defer dirs.close()
	for i := range ex.x.Entries {
		e := &ex.x.Entries[i]
		if e.Type == TypeDir || (e.Type == TypeFile && e.Size > 0) {
			continue
		}
		pfd, dir, err := dirs.parent(e)
		if err != nil {
			return err
		}
		if err := ex.writeSmall(pfd, e, dir, ex.fresh[createdDir{e.Root, dir}]); err != nil {
			return fmt.Errorf("restoring %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
	}
	for i := len(ex.x.Entries) - 1; i >= 0; i-- {
		e := &ex.x.Entries[i]
		if e.Type != TypeDir {
			continue
		}
		fd, err := dirs.fd(e.Root, e.Path, false)
		if err != nil {
			return err
		}
		if err := unix.Fchmod(fd, e.Mode); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		if err := unix.UtimesNanoAt(fd, "", ts, 0); err != nil {
			// Older kernels reject an empty path; fall back to the name.
			pfd, perr := dirs.fd(e.Root, path.Dir(e.Path), false)
			if perr != nil {
				return perr
			}
			if err := unix.UtimesNanoAt(pfd, path.Base(e.Path), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("setting the mtime of %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
			}
		}
	}
	ex.created = nil
	return nil
}

// renameInto moves tmp over name in directory pfd, removing a directory in
// the way (the index says a file lives there now).
func (ex *Extractor) renameInto(pfd, root int, dir, tmp, name string) error {
	err := unix.Renameat(pfd, tmp, pfd, name)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		if rerr := ex.roots[root].RemoveAll(path.Join(dir, name)); rerr != nil {
			return rerr
		}
		err = unix.Renameat(pfd, tmp, pfd, name)
	}
	if err != nil {
		return fmt.Errorf("moving %s into place: %w", filepath.Join(ex.dests[root], dir, name), err)
	}
	return nil
}

// writeSmall restores a symlink or an empty file; in a fresh directory,
// under its final name.
func (ex *Extractor) writeSmall(pfd int, e *Entry, dir string, fresh bool) error {
	name := path.Base(e.Path)
	ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
	var st unix.Stat_t
	exists := !fresh && unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	tmp := name
	if !fresh {
		tmp = tempName()
	}
	switch e.Type {
	case TypeSymlink:
		if exists && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if cur, err := readlinkat(pfd, name); err == nil && cur == e.Link {
				return unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
			}
		}
		if err := unix.Symlinkat(e.Link, pfd, tmp); err != nil {
			return err
		}
	case TypeFile:
		if exists && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 {
			tmp = name
		} else {
			fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return err
			}
			unix.Close(fd)
		}
		if err := unix.Fchmodat(pfd, tmp, e.Mode, 0); err != nil {
			return err
		}
	}
	if err := unix.UtimesNanoAt(pfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		unix.Unlinkat(pfd, tmp, 0) //nolint:errcheck // best effort cleanup
		return err
	}
	if tmp == name {
		return nil
	}
	return ex.renameInto(pfd, e.Root, dir, tmp, name)
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Abort removes the temporary files and the directories Prepare created, so
// that a failed restore leaves the folders as they were.
func (ex *Extractor) Abort() {
	dirs := ex.newDirFDs()
	defer dirs.close()
	for _, pf := range ex.pending {
		if pfd, err := dirs.fd(pf.root, pf.dir, false); err == nil {
			unix.Unlinkat(pfd, pf.tmp, 0) //nolint:errcheck // best effort
		}
	}
	ex.pending = nil
	dirs.close()
	for i := len(ex.created) - 1; i >= 0; i-- {
		c := ex.created[i]
		ex.roots[c.root].Remove(c.rel) //nolint:errcheck // only empty ones go
	}
	ex.created = nil
	for i, d := range ex.dests {
		if ex.fresh[createdDir{i, ""}] {
			os.Remove(d) //nolint:errcheck // only an empty one goes
		}
	}
	clear(ex.fresh)
}
