package archive

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Extractor restores an index into folders, safely and all-or-nothing:
//
//   - every path is opened one component at a time with O_NOFOLLOW from the
//     folder's own descriptor, so nothing is ever written through a symlink
//     or outside the folder, whatever the index or the disk holds;
//   - file content is written to temporary files in a staging directory of
//     the folder's own (named TempPrefix...), checked (size and sha256), and
//     renamed into place by Commit; Abort removes them, the directories it
//     created, puts back what it moved aside and the directory modes it
//     changed: the folders are as they were;
//   - in a directory the extractor created itself (a cold restore), files
//     are written under their final names: nobody else has anything there,
//     and Abort removes them with the directory. This saves a rename and a
//     stat per file;
//   - a file already on disk is kept only when its content is the entry's:
//     proven by a record (see Known) or by hashing it. Equal size and mtime
//     prove nothing. A file with other names (hard links) is never changed
//     in place: it is replaced, so the other names keep their content;
//   - it records the identity (FileID) of every file it leaves on disk, for
//     the restore state.
//
// Use: NewExtractor, Prepare, ExtractPack for each of the packs it returns
// (in parallel if you like), then Commit or Abort, then Close.
type Extractor struct {
	// Known, if set, says which content the file on disk at the path of
	// entry i (of the index being extracted) is proven to hold without
	// reading it (from a record of an earlier run), or the zero Sum.
	Known func(i int, id FileID, size, mtime int64, mode uint32) digest.Sum
	// Jobs is how many files Prepare hashes at once. Default 4.
	Jobs int

	x     *Index
	dests []string
	// rootFDs are the folders' descriptors, from which every path is opened
	// one component at a time with the *at system calls (O_NOFOLLOW,
	// renameat, utimensat...): what the extraction itself needs, which
	// os.Root does not offer. roots are os.Roots of the same folders, used
	// only to remove trees (RemoveAll, Remove), which os.Root does safely and
	// which would otherwise mean a hand-written recursive unlinkat.
	rootFDs []int
	roots   []*os.Root

	needed  []need   // per entry: whether and how content must be written
	modeSet []bool   // per entry: a directory that has its final mode already
	ids     []FileID // per entry: the file left on disk, for the state
	present int
	hashed  atomic.Int64
	umask   uint32

	mu      sync.Mutex
	created []createdDir // directories made by Prepare, parents first
	// fresh holds the directories made by Prepare (and the root, "", of
	// folders that did not exist): they held nothing of anyone else's.
	fresh     map[createdDir]bool
	chmodded  []chmodded  // existing directories Prepare made writable
	displaced []displaced // non-directories moved aside for a directory
	stages    []stage     // per root: where temporary files are written
	// mtimes holds the mtime of each existing directory Prepare changed
	// (by making or moving something in it), for Abort to set back.
	mtimes map[createdDir]int64
	// pending are the files written in the stage, for Commit to move
	// into place; direct the entries of the files written under their
	// final names (every file of a cold restore: 4 bytes each, not a
	// pendingFile's 40), for Abort to remove.
	pending []pendingFile
	direct  []int32
	fixes   []int // present files whose mode or mtime Commit sets
	written int64
	seq     atomic.Int64
}

// need says whether an entry's content must be written, and how.
type need uint8

const (
	needNone   need = iota
	needTemp        // in the staging directory, renamed at Commit
	needDirect      // under its final name, in a fresh directory
)

type createdDir struct {
	root int
	rel  string
}

type chmodded struct {
	root int
	rel  string
	mode uint32
}

// displaced is a file or symlink moved into the staging directory because
// the entry has a directory at its path.
type displaced struct {
	root     int
	dir, tmp string // where it was (parent), and its name in the stage
	name     string
}

// stage is a folder's staging directory, made on first use.
type stage struct {
	name string
	fd   int
}

type pendingFile struct {
	entry int
	dir   string // rel path of the parent ("" for the root)
	tmp   string // name in the stage, "" when written directly
}

// NewExtractor opens (creating them if needed) the destination folders, one
// per root of x, in order.
func NewExtractor(x *Index, dests []string) (*Extractor, error) {
	if len(dests) != len(x.Roots) {
		return nil, fmt.Errorf("the entry holds %d folder(s) (%v) but %d were given to restore into", len(x.Roots), x.Roots, len(dests))
	}
	if len(x.Entries) > math.MaxInt32 {
		return nil, fmt.Errorf("an index of %d entries is past what a restore handles (%d)", len(x.Entries), math.MaxInt32)
	}
	ex := &Extractor{x: x, dests: dests, needed: make([]need, len(x.Entries)), modeSet: make([]bool, len(x.Entries)), ids: make([]FileID, len(x.Entries)),
		umask: umask(), fresh: map[createdDir]bool{}, stages: make([]stage, len(dests)), mtimes: map[createdDir]int64{}}
	for i, d := range dests {
		ex.stages[i].fd = -1
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			ex.fresh[createdDir{i, ""}] = true
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			ex.Close()
			return nil, fmt.Errorf("creating folder %s: %w", d, err)
		}
		fd, err := sysOpenat(unix.AT_FDCWD, d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
		sysClose(fd)
	}
	for _, r := range ex.roots {
		r.Close()
	}
	for i := range ex.stages {
		if ex.stages[i].fd >= 0 {
			sysClose(ex.stages[i].fd)
			ex.stages[i].fd = -1
		}
	}
	ex.rootFDs, ex.roots = nil, nil
}

// stageFD returns the descriptor of root's staging directory, making it.
func (ex *Extractor) stageFD(root int) (int, error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	s := &ex.stages[root]
	if s.fd >= 0 {
		return s.fd, nil
	}
	name := tempName()
	ex.keepMTime(ex.rootFDs[root], createdDir{root, ""})
	if err := sysMkdirat(ex.rootFDs[root], name, 0o700); err != nil {
		return -1, fmt.Errorf("creating a staging directory in %s: %w", ex.dests[root], err)
	}
	fd, err := openDirAt(ex.rootFDs[root], name)
	if err != nil {
		unix.Unlinkat(ex.rootFDs[root], name, unix.AT_REMOVEDIR) //nolint:errcheck // best effort
		return -1, fmt.Errorf("opening the staging directory in %s: %w", ex.dests[root], err)
	}
	s.name, s.fd = name, fd
	return fd, nil
}

// keepMTime records, once, the mtime of directory k (open as fd) before a
// change in it, unless Prepare made it. The caller holds ex.mu.
func (ex *Extractor) keepMTime(fd int, k createdDir) {
	if _, ok := ex.mtimes[k]; ok || ex.fresh[k] {
		return
	}
	var st unix.Stat_t
	if sysFstat(fd, &st) == nil {
		ex.mtimes[k] = st.Mtim.Nano()
	}
}

// tempIn returns a new name for a temporary file in a stage.
func (ex *Extractor) tempIn() string { return strconv.FormatInt(ex.seq.Add(1), 36) }

// removeStages removes the staging directories and what is left in them.
func (ex *Extractor) removeStages() {
	for i := range ex.stages {
		s := &ex.stages[i]
		if s.fd < 0 {
			continue
		}
		sysClose(s.fd)
		s.fd = -1
		ex.roots[i].RemoveAll(s.name) //nolint:errcheck // best effort; the next run removes leftovers
	}
}

// RemoveTemps removes what interrupted runs left in dir: the names
// starting with TempPrefix at its top (staging directories, state files
// being written) and the paths rels, relative to dir (found deeper by a
// walk), all without following symlinks. A dir that does not exist is fine.
func RemoveTemps(dir string, rels ...string) error {
	r, err := os.OpenRoot(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := r.Open(".")
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, TempPrefix) {
			rels = append(rels, n)
		}
	}
	var errs []error
	for _, rel := range rels {
		if !strings.HasPrefix(path.Base(rel), TempPrefix) {
			errs = append(errs, fmt.Errorf("refusing to remove %s: not a temporary file", filepath.Join(dir, rel)))
		} else if err := r.RemoveAll(rel); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", filepath.Join(dir, rel), err))
		}
	}
	return errors.Join(errs...)
}

// dirFDs caches open directory descriptors for one goroutine.
type dirFDs struct {
	ex    *Extractor
	cache map[createdDir]int
}

func (ex *Extractor) newDirFDs() *dirFDs { return &dirFDs{ex: ex, cache: map[createdDir]int{}} }

func (d *dirFDs) close() {
	for _, fd := range d.cache {
		sysClose(fd)
	}
	clear(d.cache)
}

// fd returns a descriptor of the directory rel of root, opening each
// component with O_NOFOLLOW. With create, missing components are made and
// non-directories in the way are moved into the stage (Abort puts them
// back, Commit drops them).
func (d *dirFDs) fd(root int, rel string, create bool) (int, error) {
	if rel == "" || rel == "." {
		return d.ex.rootFDs[root], nil
	}
	k := createdDir{root, rel}
	if fd, ok := d.cache[k]; ok {
		return fd, nil
	}
	parent, base := path.Split(rel)
	parent = parentDir(rel)
	pfd, err := d.fd(root, parent, create)
	if err != nil {
		return -1, err
	}
	fd, err := openDirAt(pfd, base)
	if err != nil && create {
		d.ex.mu.Lock()
		d.ex.keepMTime(pfd, createdDir{root, parent})
		d.ex.mu.Unlock()
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			// A file or symlink where the entry has a directory.
			err = d.ex.displace(pfd, root, parentDir(rel), base)
		}
		if err == nil || errors.Is(err, unix.ENOENT) {
			if err = sysMkdirat(pfd, base, 0o700); err == nil {
				d.ex.mu.Lock()
				d.ex.created = append(d.ex.created, k)
				d.ex.fresh[k] = true
				d.ex.mu.Unlock()
				fd, err = openDirAt(pfd, base)
			}
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

// mkdirFresh makes directory entry e when its parent is fresh (made by
// this restore: nothing of anyone else's is in it), with its final mode
// when that leaves it writable (freshDirMode), and without opening it: the
// files written into it open it when they need it. It reports false, and
// does nothing, when the parent is not fresh (fd then finds out what is on
// disk) or the name is taken (someone else made it meanwhile).
func (d *dirFDs) mkdirFresh(e *Entry) (bool, error) {
	parent := parentDir(e.Path)
	if !d.ex.fresh[createdDir{e.Root, parent}] {
		return false, nil
	}
	pfd, err := d.fd(e.Root, parent, false)
	if err != nil {
		return false, err
	}
	if err := sysMkdirat(pfd, path.Base(e.Path), d.ex.freshDirMode(e.Mode)); err != nil {
		return false, nil
	}
	k := createdDir{e.Root, e.Path}
	d.ex.mu.Lock()
	d.ex.created = append(d.ex.created, k)
	d.ex.fresh[k] = true
	d.ex.mu.Unlock()
	return true, nil
}

// freshDirMode is the mode a directory of mode m is made with: m itself
// when its owner may write and enter it and the umask takes nothing from
// it (Commit then need not change it), else 0700 (Commit sets m).
func (ex *Extractor) freshDirMode(m uint32) uint32 {
	if m&0o700 == 0o700 && m&ex.umask == 0 {
		return m
	}
	return 0o700
}

// displace moves name (not a directory) out of the way into the stage.
func (ex *Extractor) displace(pfd, root int, dir, name string) error {
	sfd, err := ex.stageFD(root)
	if err != nil {
		return err
	}
	tmp := ex.tempIn()
	if err := unix.Renameat(pfd, name, sfd, tmp); err != nil {
		return err
	}
	ex.mu.Lock()
	ex.displaced = append(ex.displaced, displaced{root: root, dir: dir, tmp: tmp, name: name})
	ex.mu.Unlock()
	return nil
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
		fd, err := sysOpenat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// onDisk is a file found at an entry's path by Prepare.
// It keeps only what checkOnDisk needs of the file's stat: a unix.Stat_t
// is 144 bytes, and a warm restore of 600,000 files holds one per file.
type onDisk struct {
	entry int
	dir   string
	id    FileID
	size  int64
	mtime int64
	mode  uint32 // permission bits
	// linked: the file has other names (st_nlink > 1).
	linked bool
}

func onDiskOf(entry int, dir string, st *unix.Stat_t) onDisk {
	return onDisk{entry: entry, dir: dir, id: idOf(st), size: st.Size, mtime: st.Mtim.Nano(), mode: uint32(st.Mode & 0o777), linked: st.Nlink > 1}
}

// Prepare creates the directories of the index and finds which files must be
// written: a file on disk is kept when Known proves its content, or when it
// hashes to the entry's digest. It returns the packs that hold the others.
func (ex *Extractor) Prepare() ([]int, error) {
	dirs := ex.newDirFDs()
	defer dirs.close()
	var check []onDisk
	for i := range ex.x.Entries {
		e := &ex.x.Entries[i]
		switch e.Type {
		case TypeDir:
			made, err := dirs.mkdirFresh(e)
			if err != nil {
				return nil, err
			}
			if made {
				ex.modeSet[i] = e.Mode == ex.freshDirMode(e.Mode)
				continue
			}
			fd, err := dirs.fd(e.Root, e.Path, true)
			if err != nil {
				return nil, err
			}
			// Existing read-only directories (a Go module cache) must take
			// new files; Commit sets the final mode, Abort the old one.
			var st unix.Stat_t
			if err := sysFstat(fd, &st); err == nil && st.Mode&0o700 != 0o700 {
				if err := sysFchmod(fd, (st.Mode&0o777)|0o700); err != nil {
					return nil, fmt.Errorf("making %s writable: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
				}
				ex.chmodded = append(ex.chmodded, chmodded{e.Root, e.Path, st.Mode & 0o7777})
			} else if err == nil && st.Mode&0o7777 == e.Mode && !ex.fresh[createdDir{e.Root, e.Path}] {
				ex.modeSet[i] = true // as it was: Commit sets only its mtime
			}
		case TypeFile:
			if e.Size == 0 {
				continue
			}
			dir := parentDir(e.Path)
			if ex.fresh[createdDir{e.Root, dir}] {
				ex.needed[i] = needDirect
				continue
			}
			pfd, err := dirs.fd(e.Root, dir, true)
			if err != nil {
				return nil, err
			}
			var st unix.Stat_t
			err = sysFstatat(pfd, path.Base(e.Path), &st, unix.AT_SYMLINK_NOFOLLOW)
			if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != e.Size {
				ex.needed[i] = needTemp
				continue
			}
			f := onDiskOf(i, dir, &st)
			if ex.Known != nil {
				// A record proves which content the file holds: the
				// entry's, or another (then it is rewritten without being
				// read). Settled here, so that only the files to read are
				// kept (a warm restore: a few of 600,000, not all).
				if d := ex.Known(i, f.id, f.size, f.mtime, f.mode); !d.IsZero() {
					ex.settle(&f, d == e.Digest)
					continue
				}
			}
			check = append(check, f)
		}
	}
	if err := ex.checkOnDisk(check, dirs); err != nil {
		return nil, err
	}
	packs := map[int]bool{}
	for i, n := range ex.needed {
		if n != needNone {
			packs[ex.x.Entries[i].Pack] = true
		}
	}
	out := make([]int, 0, len(packs))
	for p := range packs {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// checkOnDisk decides, for files of the right size already on disk that
// no record proves, whether they hold the entry's content, hashing them (in
// parallel). prepared are Prepare's directory descriptors, which one
// worker uses.
func (ex *Extractor) checkOnDisk(files []onDisk, prepared *dirFDs) error {
	jobs := ex.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	same := make([]bool, len(files))
	// Runs of files of one directory (at most 64, so that a large one is
	// shared) go to jobs workers, each with its own directory descriptors:
	// a directory is opened once per run, not once per file, and no
	// goroutine is started per file.
	runs := make(chan [2]int) // files[lo:hi]
	var g errgroup.Group
	for w := range min(jobs, len(files)) {
		g.Go(func() error {
			// The first worker takes over Prepare's descriptors (Prepare
			// waits for the workers): what it opened is not opened again.
			dirs := prepared
			if w > 0 {
				dirs = ex.newDirFDs()
				defer dirs.close()
			}
			var err error
			for run := range runs {
				for k := run[0]; k < run[1]; k++ {
					if err == nil {
						same[k], err = ex.hashOnDisk(dirs, &files[k])
					}
				}
			}
			return err
		})
	}
	for lo := 0; lo < len(files); {
		hi := lo + 1
		for hi < len(files) && hi-lo < 64 && files[hi].dir == files[lo].dir &&
			ex.x.Entries[files[hi].entry].Root == ex.x.Entries[files[lo].entry].Root {
			hi++
		}
		runs <- [2]int{lo, hi}
		lo = hi
	}
	close(runs)
	if err := g.Wait(); err != nil {
		return err
	}
	for k := range files {
		ex.settle(&files[k], same[k])
	}
	return nil
}

// settle decides what is done with file f on disk, same saying whether it
// holds its entry's content: kept, its mode or mtime fixed at Commit, or
// rewritten (other content, or a fix on a file with other names, which
// must keep what they hold).
func (ex *Extractor) settle(f *onDisk, same bool) {
	e := &ex.x.Entries[f.entry]
	metaSame := f.mode == e.Mode && f.mtime == e.MTime
	switch {
	case !same || (!metaSame && f.linked):
		ex.needed[f.entry] = needTemp
	case metaSame:
		ex.present++
		ex.ids[f.entry] = f.id
	default:
		ex.present++
		ex.fixes = append(ex.fixes, f.entry)
	}
}

// hashOnDisk reports whether file f on disk (still the file Prepare saw)
// holds its entry's content, reading it.
func (ex *Extractor) hashOnDisk(dirs *dirFDs, f *onDisk) (bool, error) {
	e := &ex.x.Entries[f.entry]
	pfd, err := dirs.fd(e.Root, f.dir, false)
	if err != nil {
		return false, err
	}
	fd, err := sysOpenat(pfd, path.Base(e.Path), readFlags, 0)
	if err != nil {
		return false, nil // unreadable: rewritten
	}
	rf := rawFile(fd)
	defer rf.Close()
	ex.hashed.Add(1)
	if checkOpened(rf, f.id, e.Size) != nil {
		return false, nil
	}
	got, err := hashOpened(rf, e.Size)
	return err == nil && got == e.Digest, nil
}

// Present is the number of files Prepare found already in place.
func (ex *Extractor) Present() int { return ex.present }

// Hashed is the number of files on disk Prepare read to check them.
func (ex *Extractor) Hashed() int { return int(ex.hashed.Load()) }

// IDs returns, after Commit, the identity of every file with content the
// restore left on disk (zero for other entries), parallel to the entries.
func (ex *Extractor) IDs() []FileID { return ex.ids }

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
// index does not need is skipped. Files land in the stage until Commit,
// except in fresh directories.
func (ex *Extractor) ExtractPack(p int, tr *tar.Reader) error {
	n := 0
	for i := range ex.x.Entries {
		if ex.needed[i] != needNone && ex.x.Entries[i].Pack == p {
			n++
		}
	}
	want := make(map[string]int, n) // sized once: no garbage of growing it
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
	// One writer to the file and the hash for the whole pack, and the
	// digest compared in place: nothing allocated a file for them.
	cur := &currentFile{}
	fh := io.MultiWriter(cur, h)
	var sum digest.Sum // h.Sum's destination: escapes once a pack, not once a file
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
		wfd, name, tmp := pfd, path.Base(e.Path), ""
		if ex.needed[i] == needTemp {
			if wfd, err = ex.stageFD(e.Root); err != nil {
				return err
			}
			tmp = ex.tempIn()
			name = tmp
		}
		// Created with its final mode: a chmod is needed only when the
		// umask took bits away.
		fd, err := sysOpenat(wfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Mode)
		if err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
		f := rawFile(fd)
		ex.mu.Lock()
		if tmp != "" {
			ex.pending = append(ex.pending, pendingFile{entry: i, dir: dir, tmp: tmp})
		} else {
			ex.direct = append(ex.direct, int32(i)) // NewExtractor: i fits
		}
		ex.mu.Unlock()
		h.Reset()
		cur.w = f
		n, err := io.CopyBuffer(fh, tr, *bufp)
		cur.w = nil
		if err == nil && n != e.Size {
			err = unsafeErr(e, "size lies: got %d bytes, want %d", n, e.Size)
		}
		if err == nil {
			if h.Sum(sum[:0]); sum != e.Digest {
				err = fmt.Errorf("%w: %s: content sha256 %s, index says %s", ErrCorrupt, e.Path, sum.Short(), e.Digest.Short())
			}
		}
		if err == nil && e.Mode&ex.umask != 0 {
			err = sysFchmod(fd, e.Mode)
		}
		if err == nil {
			ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
			err = sysFutimens(fd, ts)
		}
		if err == nil && tmp == "" {
			// Written in place: this is the file the state records. A file
			// in the stage is recorded after Commit moved it (a rename
			// changes the ctime).
			var st unix.Stat_t
			if err = sysFstat(fd, &st); err == nil {
				ex.ids[i] = idOf(&st)
			}
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

// currentFile writes to the file being extracted (w, changed per file),
// so that one io.MultiWriter serves a whole pack.
type currentFile struct{ w io.Writer }

func (c *currentFile) Write(p []byte) (int, error) { return c.w.Write(p) }

// ErrCorrupt is wrapped by errors of content that does not match the index.
var ErrCorrupt = errors.New("corrupt entry")

// Commit moves the staged files into place, then writes symlinks and empty
// files, fixes the modes and mtimes of files kept, then sets directory
// modes and mtimes, deepest first, and removes the stage (with what was
// moved aside).
func (ex *Extractor) Commit() error {
	// Renames of tens of thousands of files: two at a time, each half in
	// path order so that directory descriptors are reused.
	renames := ex.pending
	var g errgroup.Group
	half := len(renames) / 2
	for _, part := range [][]pendingFile{renames[:half], renames[half:]} {
		g.Go(func() error {
			dirs := ex.newDirFDs()
			defer dirs.close()
			for _, pf := range part {
				e := &ex.x.Entries[pf.entry]
				pfd, err := dirs.fd(e.Root, pf.dir, false)
				if err != nil {
					return err
				}
				if err := ex.renameInto(pfd, e.Root, pf.dir, pf.tmp, path.Base(e.Path)); err != nil {
					return err
				}
				if err := ex.record(pfd, pf.entry); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	ex.pending, ex.direct = nil, nil
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
	for _, i := range ex.fixes {
		e := &ex.x.Entries[i]
		pfd, _, err := dirs.parent(e)
		if err != nil {
			return err
		}
		name := path.Base(e.Path)
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		err = sysFchmodat(pfd, name, e.Mode)
		if err == nil {
			err = sysUtimesAt(pfd, name, ts)
		}
		if err == nil {
			err = ex.record(pfd, i)
		}
		if err != nil {
			return fmt.Errorf("restoring %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
	}
	for i := len(ex.x.Entries) - 1; i >= 0; i-- {
		e := &ex.x.Entries[i]
		if e.Type != TypeDir {
			continue
		}
		if !ex.modeSet[i] {
			fd, err := dirs.fd(e.Root, e.Path, false)
			if err != nil {
				return err
			}
			if err := sysFchmod(fd, e.Mode); err != nil {
				return fmt.Errorf("setting the mode of %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
		if err := ex.setDirTimes(dirs, e.Root, e.Path, ts); err != nil {
			return fmt.Errorf("setting the mtime of %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
		}
	}
	ex.created, ex.chmodded, ex.displaced = nil, nil, nil
	ex.removeStages()
	return nil
}

// setDirTimes sets the times of directory rel of root, by its name in its
// parent (utimensat has no portable form for a descriptor alone).
func (ex *Extractor) setDirTimes(dirs *dirFDs, root int, rel string, ts []unix.Timespec) error {
	if rel == "" {
		return sysUtimesAt(unix.AT_FDCWD, ex.dests[root], ts)
	}
	pfd, err := dirs.fd(root, parentDir(rel), false)
	if err != nil {
		return err
	}
	return sysUtimesAt(pfd, path.Base(rel), ts)
}

// record stats entry i's file (in directory pfd) for the state.
func (ex *Extractor) record(pfd, i int) error {
	e := &ex.x.Entries[i]
	var st unix.Stat_t
	if err := sysFstatat(pfd, path.Base(e.Path), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("checking %s: %w", filepath.Join(ex.dests[e.Root], e.Path), err)
	}
	ex.ids[i] = idOf(&st)
	return nil
}

// renameInto moves tmp (in the root's stage) over name in directory pfd,
// removing a directory in the way (the index says a file lives there now).
func (ex *Extractor) renameInto(pfd, root int, dir, tmp, name string) error {
	sfd, err := ex.stageFD(root)
	if err != nil {
		return err
	}
	err = unix.Renameat(sfd, tmp, pfd, name)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		if rerr := ex.roots[root].RemoveAll(path.Join(dir, name)); rerr != nil {
			return rerr
		}
		err = unix.Renameat(sfd, tmp, pfd, name)
	}
	if err != nil {
		return fmt.Errorf("moving %s into place: %w", filepath.Join(ex.dests[root], dir, name), err)
	}
	return nil
}

// writeSmall restores a symlink or an empty file; in a fresh directory,
// under its final name, else through the stage. An empty file already there
// is changed in place only when it has no other name.
func (ex *Extractor) writeSmall(pfd int, e *Entry, dir string, fresh bool) error {
	name := path.Base(e.Path)
	ts := []unix.Timespec{unix.NsecToTimespec(e.MTime), unix.NsecToTimespec(e.MTime)}
	var st unix.Stat_t
	exists := !fresh && sysFstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	wfd, tmp := pfd, name
	switch e.Type {
	case TypeSymlink:
		if exists && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if cur, err := readlinkat(pfd, name); err == nil && cur == e.Link {
				return sysUtimesAt(pfd, name, ts)
			}
		}
	case TypeFile:
		if exists && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0 && st.Nlink == 1 {
			if st.Mode&0o7777 != e.Mode {
				if err := sysFchmodat(pfd, name, e.Mode); err != nil {
					return err
				}
			}
			return sysUtimesAt(pfd, name, ts)
		}
	}
	if !fresh {
		var err error
		if wfd, err = ex.stageFD(e.Root); err != nil {
			return err
		}
		tmp = ex.tempIn()
	}
	switch e.Type {
	case TypeSymlink:
		if err := unix.Symlinkat(e.Link, wfd, tmp); err != nil {
			return err
		}
	case TypeFile:
		// Created with its final mode: a chmod is needed only when the
		// umask took bits away.
		fd, err := sysOpenat(wfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, e.Mode)
		if err != nil {
			return err
		}
		if e.Mode&ex.umask != 0 {
			err = sysFchmod(fd, e.Mode)
		}
		sysClose(fd)
		if err != nil {
			return err
		}
	}
	if err := sysUtimesAt(wfd, tmp, ts); err != nil {
		return err
	}
	if fresh {
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

// Abort undoes Prepare and ExtractPack: it removes the files written in
// fresh directories and the directories Prepare created, puts back what
// was moved aside and the modes of directories it made writable, and
// removes the stage: the folders are as they were.
func (ex *Extractor) Abort() {
	dirs := ex.newDirFDs()
	defer dirs.close()
	for _, i := range ex.direct { // the stage's are removed with it
		e := &ex.x.Entries[i]
		if pfd, err := dirs.fd(e.Root, parentDir(e.Path), false); err == nil {
			unix.Unlinkat(pfd, path.Base(e.Path), 0) //nolint:errcheck // best effort
		}
	}
	ex.pending, ex.direct = nil, nil
	dirs.close()
	for i := len(ex.created) - 1; i >= 0; i-- {
		c := ex.created[i]
		ex.roots[c.root].Remove(c.rel) //nolint:errcheck // only empty ones go
	}
	ex.created = nil
	for i := len(ex.displaced) - 1; i >= 0; i-- {
		d := ex.displaced[i]
		pfd, err := dirs.fd(d.root, d.dir, false)
		if err != nil {
			continue
		}
		if sfd, err := ex.stageFD(d.root); err == nil {
			unix.Renameat(sfd, d.tmp, pfd, d.name) //nolint:errcheck // best effort
		}
	}
	ex.displaced = nil
	for i := len(ex.chmodded) - 1; i >= 0; i-- {
		c := ex.chmodded[i]
		if fd, err := dirs.fd(c.root, c.rel, false); err == nil {
			sysFchmod(fd, c.mode) //nolint:errcheck // best effort
		}
	}
	ex.chmodded = nil
	ex.removeStages()
	for k, mt := range ex.mtimes {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(mt)}
		ex.setDirTimes(dirs, k.root, k.rel, ts) //nolint:errcheck // best effort
	}
	clear(ex.mtimes)
	dirs.close()
	for i, d := range ex.dests {
		if ex.fresh[createdDir{i, ""}] {
			os.Remove(d) //nolint:errcheck // only an empty one goes
		}
	}
	clear(ex.fresh)
}
