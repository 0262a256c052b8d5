package archive

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/format"
)

// StateFileName is the file restore leaves in each folder to record what it
// restored; walks skip it.
const StateFileName = ".tekton-cache-state"

// TempPrefix starts the names of files being restored; walks skip them.
const TempPrefix = ".tcache-tmp-"

// Skipped is something a walk left out of the index, and why.
type Skipped struct {
	Path   string
	Reason string
	// Temp marks a temporary file left by an interrupted run, which the
	// caller removes (RemoveTemps) by its path Rel in folder Root.
	Temp bool
	Root int
	Rel  string
}

// Walk lists the folders into a new index whose files are not packed yet
// (Pack is NoPack, Digest empty). A folder that does not exist is an empty
// root. Sockets, fifos and devices are skipped, and so are symlinks that
// restore would refuse (absolute, or leaving their folder).
func Walk(roots []string) (*Index, []Skipped, error) {
	x := &Index{Format: format.Version, Roots: append([]string(nil), roots...)}
	var skipped []Skipped
	// Each directory's entries are a chunk of their own, joined once into
	// slices of the exact size: appending them to one growing slice
	// allocated it about five times over (Go grows large slices by a
	// quarter) and held two copies at each growth: at 600,000 entries,
	// 330 MB allocated for 67 MB kept. The chunks hold walked records (80
	// bytes), not entries and identities (152): both are held at once
	// while they are joined, the peak of a save's walk.
	perRoot := make([][]walkChunk, len(roots))
	total := 0
	for i, root := range roots {
		cs, sk, err := walkRoot(i, root)
		if err != nil {
			return nil, nil, err
		}
		for _, c := range cs {
			total += len(c.recs)
		}
		perRoot[i] = cs
		skipped = append(skipped, sk...)
	}
	// The entries are joined in the index's order (CompareEntries), a
	// directory at a time (treeOrder): a sort of the whole index compared
	// long paths that share most of their bytes, 12% of a no-op save's walk.
	x.Entries, x.IDs = make([]Entry, 0, total), make([]FileID, 0, total)
	for root, chunks := range perRoot {
		treeOrder(chunks, func(r *walked) {
			x.Entries = append(x.Entries, Entry{Root: root, Path: r.path, Type: entryType(r.typ), Mode: r.mode, MTime: r.mtime, Size: r.size, Link: r.link, Pack: NoPack})
			x.IDs = append(x.IDs, r.id)
		})
		perRoot[root] = nil
	}
	if len(x.Entries) != total { // every directory is below its parent's entry: cannot be
		return nil, nil, fmt.Errorf("walking %s: %d of %d entries in order", strings.Join(roots, ", "), len(x.Entries), total)
	}
	// Drop links that restore would refuse, so one venv link to /usr/bin
	// does not make the whole entry unrestorable.
	if !slices.ContainsFunc(x.Entries, func(e Entry) bool { return e.Type == TypeSymlink }) {
		return x, skipped, nil
	}
	// Each link is checked against every link of its folder, as on disk.
	res := newLinkResolvers(len(roots), x.Entries)
	kept, keptIDs := x.Entries[:0], x.IDs[:0]
	for i := range x.Entries {
		e := x.Entries[i]
		if e.Type == TypeSymlink {
			if err := res[e.Root].check(&e); err != nil {
				skipped = append(skipped, Skipped{Path: filepath.Join(roots[e.Root], e.Path), Reason: "symlink to " + e.Link + " leaves the folder"})
				continue
			}
		}
		kept, keptIDs = append(kept, e), append(keptIDs, x.IDs[i])
	}
	x.Entries, x.IDs = kept, keptIDs
	return x, skipped, nil
}

// walkChunk is what one directory of a root holds: dir is its path in
// the root ("" for the root itself), recs its entries.
type walkChunk struct {
	dir  string
	recs []walked
}

// treeOrder calls emit with the records of chunks (the directories of one
// root, one chunk each, in any order) in the order of their paths, as
// strings.Compare orders them, sorting only each directory's names.
//
// In a directory D, every path below its child c starts with "D/c/", and
// any other path of D's subtree compares to all of them as it compares to
// "D/c/": it differs from "D/c/" within those bytes, or is "D/c" itself,
// a prefix. So D's names are sorted with the subtree of each child
// directory c as one more name, "c/", which is replaced by that subtree,
// in the same order, recursively.
func treeOrder(chunks []walkChunk, emit func(*walked)) {
	byDir := make(map[string]int, len(chunks))
	for i := range chunks {
		byDir[chunks[i].dir] = i
	}
	// items is a stack of the directories being emitted: each sorts its
	// own part, past its parent's.
	type item struct {
		name string
		rec  int32 // in its chunk
		sub  int32 // the chunk of the subtree this item stands for, or -1
	}
	var items []item
	var walkDir func(c int)
	walkDir = func(c int) {
		ch := &chunks[c]
		start := len(items)
		skip := len(ch.dir) + 1
		if ch.dir == "" {
			skip = 0
		}
		for k := range ch.recs {
			r := &ch.recs[k]
			name := r.path[skip:]
			items = append(items, item{name, int32(k), -1})
			if r.typ == TypeDir[0] {
				if sub, ok := byDir[r.path]; ok {
					items = append(items, item{name, int32(k), int32(sub)})
				}
			}
		}
		part := items[start:]
		slices.SortFunc(part, func(a, b item) int { return compareNames(a.name, a.sub >= 0, b.name, b.sub >= 0) })
		for i := start; i < start+len(part); i++ {
			if it := items[i]; it.sub >= 0 {
				walkDir(int(it.sub)) // may grow items: indexed, not ranged
			} else {
				emit(&ch.recs[it.rec])
			}
		}
		items = items[:start]
		ch.recs = nil // collectable once emitted
	}
	if root, ok := byDir[""]; ok {
		walkDir(root)
	}
}

// compareNames compares a and b as strings.Compare compares a+"/" (when
// as) and b+"/" (when bs): names hold no '/'.
func compareNames(a string, as bool, b string, bs bool) int {
	n := min(len(a), len(b))
	if c := strings.Compare(a[:n], b[:n]); c != 0 {
		return c
	}
	next := func(s string, slash bool) int { // the byte after the common part, -1 at the end
		switch {
		case len(s) > n:
			return int(s[n])
		case slash:
			return '/'
		}
		return -1
	}
	return cmp.Compare(next(a, as), next(b, bs))
}

// walked is what the walk keeps of an entry until it ends: its Entry's
// fields that a walk sets, and its identity.
type walked struct {
	path, link  string
	mtime, size int64
	id          FileID
	mode        uint32
	typ         byte // the Type constant's one byte
}

// entryType is the Type constant whose byte t is.
func entryType(t byte) string {
	switch t {
	case TypeFile[0]:
		return TypeFile
	case TypeDir[0]:
		return TypeDir
	}
	return TypeSymlink
}

func walkRoot(root int, dir string) ([]walkChunk, []Skipped, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading folder %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, nil, fmt.Errorf("folder %s is not a directory", dir)
	}
	w := &walker{root: root, dir: dir, sem: make(chan struct{}, 4*runtime.GOMAXPROCS(0))}
	w.wg.Add(1)
	w.readDir(nil, "", "", FileID{})
	w.wg.Wait()
	if w.err != nil {
		return nil, nil, w.err
	}
	return w.chunks, w.skipped, nil
}

// walker reads directories in parallel: stat calls dominate a walk of a
// cache with tens of thousands of small files.
type walker struct {
	root    int
	dir     string
	sem     chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	chunks  []walkChunk
	skipped []Skipped
	err     error
}

func (w *walker) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

// dirHandle is an open directory of the walk, closed when the last of its
// holders lets it go: the directory's own reading, and each subdirectory
// until it has opened itself relative to it.
type dirHandle struct {
	fd    int
	depth int
	refs  atomic.Int32
}

func (h *dirHandle) release() {
	if h.refs.Add(-1) == 0 && h.fd >= 0 {
		sysClose(h.fd)
	}
}

// maxHeldDepth is the depth past which a directory's descriptor is closed
// before its subdirectories are read (they are opened by their path
// then): each chain of directories read inline holds at most this many
// descriptors, whatever the depth of the tree.
const maxHeldDepth = 64

// beforeOpenDir, set by a test, is called before a directory below the
// root is opened: what the build may do between a listing and an open.
var beforeOpenDir func(abs string)

// openDir opens the directory name of parent (nil: the walk's root, by its
// path), never through a symlink: a directory swapped for a link to
// elsewhere after its parent was listed fails the walk (ELOOP or
// ENOTDIR), and is not walked into.
//
// Past maxHeldDepth, where it is opened by its path, the directory opened
// must be the one its parent's listing stat'ed (want: device and inode):
// a link anywhere on the path leads to another.
func (w *walker) openDir(parent *dirHandle, name, abs string, want FileID) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if parent == nil {
		return sysOpenat(unix.AT_FDCWD, abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0) // the folder given: its path may hold links
	}
	defer parent.release()
	if beforeOpenDir != nil {
		beforeOpenDir(abs)
	}
	if parent.fd >= 0 {
		return sysOpenat(parent.fd, name, flags, 0)
	}
	fd, err := sysOpenat(unix.AT_FDCWD, abs, flags, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := sysFstat(fd, &st); err != nil {
		sysClose(fd)
		return -1, err
	}
	if got := idOf(&st); got.Dev != want.Dev || got.Ino != want.Ino {
		sysClose(fd)
		return -1, errors.New("the directory was replaced while it was walked (its path leads to another)")
	}
	return fd, nil
}

// readDir reads the directory rel of the root, which is name in parent's
// directory (nil, "": the root itself) as its listing stat'ed it (id),
// and its subdirectories.
func (w *walker) readDir(parent *dirHandle, name, rel string, id FileID) {
	defer w.wg.Done()
	abs := filepath.Join(w.dir, filepath.FromSlash(rel))
	// One descriptor per directory, opened relative to its parent's, and
	// fstatat relative to it: no path resolution from the root per entry
	// or per directory, which is most of the cost of a no-op save.
	fd, err := w.openDir(parent, name, abs, id)
	if err != nil {
		w.fail(fmt.Errorf("reading %s: %w", abs, err))
		return
	}
	h := &dirHandle{fd: fd}
	if parent != nil {
		h.depth = parent.depth + 1
	}
	h.refs.Store(1)
	bufp := direntBufs.Get().(*[]byte)
	local, skipped, ok := w.statDir(fd, abs, rel, bufp)
	// Given back before the subdirectories are read, inline or not.
	direntBufs.Put(bufp)
	if !ok {
		h.release()
		return
	}
	if h.depth >= maxHeldDepth {
		h.release()
		h = &dirHandle{fd: -1, depth: h.depth} // its subdirectories are opened by path
		h.refs.Store(1)
	}
	for k := range local {
		if local[k].typ == TypeDir[0] {
			w.wg.Add(1)
			h.refs.Add(1)
			p, id := local[k].path, local[k].id
			name := p[strings.LastIndexByte(p, '/')+1:]
			select {
			case w.sem <- struct{}{}:
				go func() { w.readDir(h, name, p, id); <-w.sem }()
			default:
				w.readDir(h, name, p, id)
			}
		}
	}
	h.release()
	w.mu.Lock()
	if len(local) > 0 {
		w.chunks = append(w.chunks, walkChunk{rel, local})
	}
	w.skipped = append(w.skipped, skipped...)
	w.mu.Unlock()
}

// statDir lists the open directory fd (rel in the root, abs on disk) and
// stats its entries, reading it into *bufp. On an error, it fails the walk
// and returns !ok.
func (w *walker) statDir(fd int, abs, rel string, bufp *[]byte) (local []walked, skipped []Skipped, ok bool) {
	ents, err := readDirents(fd, bufp)
	if err != nil {
		w.fail(fmt.Errorf("reading %s: %w", abs, err))
		return nil, nil, false
	}
	// Nothing is allocated an entry but what it keeps: the names are
	// stat'ed where getdents left them (each ends in a NUL), and the
	// directory's paths are one string, each entry's path a part of it.
	buf := *bufp
	local = make([]walked, 0, len(ents))
	ends := make([]int, 0, len(ents)) // of each entry's path in paths
	size := 0                         // of every path: the string keeps the whole array alive
	for _, d := range ents {
		size += len(rel) + 1 + d.len
	}
	paths := make([]byte, 0, size)
	for _, d := range ents {
		name := buf[d.off : d.off+d.len]
		if rel == "" && string(name) == StateFileName {
			continue
		}
		if bytes.HasPrefix(name, tempPrefix) || !validName(name) {
			skipped = append(skipped, w.skip(abs, rel, string(name)))
			continue
		}
		var st unix.Stat_t
		if err := sysFstatatNUL(fd, &buf[d.off], &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed while we walk
			}
			w.fail(fmt.Errorf("stat %s: %w", filepath.Join(abs, string(name)), err))
			return nil, nil, false
		}
		e := walked{mode: uint32(st.Mode & 0o777), mtime: st.Mtim.Nano(), id: idOf(&st)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.typ, e.size = TypeFile[0], st.Size
		case unix.S_IFDIR:
			e.typ = TypeDir[0]
		case unix.S_IFLNK:
			e.typ = TypeSymlink[0]
			if e.link, err = readlinkat(fd, string(name)); err != nil {
				w.fail(fmt.Errorf("reading link %s: %w", filepath.Join(abs, string(name)), err))
				return nil, nil, false
			}
		default:
			skipped = append(skipped, Skipped{Path: filepath.Join(abs, string(name)), Reason: "not a file, directory or symlink"})
			continue
		}
		// rel is a valid path (the walk never enters a directory whose
		// name is not), so rel/name is one when name is a valid
		// component: no need for ValidPath's scans and Clean of it.
		if rel != "" {
			paths = append(append(paths, rel...), '/')
		}
		paths = append(paths, name...)
		ends = append(ends, len(paths))
		local = append(local, e)
	}
	// paths is not written again: its bytes are the entries' paths.
	all, from := "", 0
	if len(paths) > 0 {
		all = unsafe.String(&paths[0], len(paths))
	}
	for k := range local {
		local[k].path, from = all[from:ends[k]], ends[k]
	}
	return local, skipped, true
}

// tempPrefix is TempPrefix, to compare names as getdents gives them.
var tempPrefix = []byte(TempPrefix)

// skip says why the walk leaves name (in the directory rel of the root,
// abs on disk) out of the index.
func (w *walker) skip(abs, rel, name string) Skipped {
	if strings.HasPrefix(name, TempPrefix) {
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		return Skipped{Path: filepath.Join(abs, name), Reason: "temporary file of an interrupted run", Temp: true, Root: w.root, Rel: p}
	}
	return Skipped{Path: filepath.Join(abs, name), Reason: "name cannot be stored"}
}

// direntBufs holds the buffers directories are read into.
var direntBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// dirent is a name in a directory's getdents records: len bytes at off,
// then a NUL.
type dirent struct{ off, len int }

// readDirents reads the open directory fd (without . and ..) into *bufp,
// grown when the directory needs more, with getdents on the descriptor
// itself: an os.File would first set the descriptor up (an fcntl per
// directory) for nothing.
func readDirents(fd int, bufp *[]byte) ([]dirent, error) {
	var ents []dirent
	used := 0
	for {
		if len(*bufp)-used < 8<<10 { // room for a few records at least
			grown := make([]byte, 2*len(*bufp))
			copy(grown, (*bufp)[:used])
			*bufp = grown
		}
		buf := *bufp
		n, err := sysReadDirent(fd, buf[used:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return ents, nil
		}
		// linux_dirent64: d_ino (8 bytes), d_off (8), d_reclen (2),
		// d_type (1), then the name and its NUL, padded.
		for rec := buf[used : used+n]; len(rec) > 0; {
			const nameAt = 19
			if len(rec) < nameAt {
				return nil, errors.New("short getdents record")
			}
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < nameAt+1 || reclen > len(rec) {
				return nil, errors.New("bad getdents record length")
			}
			name := rec[nameAt:reclen]
			nul := bytes.IndexByte(name, 0)
			if nul < 0 {
				return nil, errors.New("getdents name without its NUL")
			}
			ino := binary.NativeEndian.Uint64(rec[0:8])
			if name := name[:nul]; ino != 0 && !(len(name) == 1 && name[0] == '.') && !(len(name) == 2 && name[0] == '.' && name[1] == '.') {
				off := used + (len(buf[used:used+n]) - len(rec)) + nameAt
				ents = append(ents, dirent{off, nul})
			}
			rec = rec[reclen:]
		}
		used += n
	}
}

// validName reports whether name can be a component of an entry path: a
// path made of such names is one ValidPath accepts.
func validName(name []byte) bool {
	return len(name) > 0 && string(name) != "." && string(name) != ".." && !bytes.ContainsAny(name, "/\\\x00")
}
