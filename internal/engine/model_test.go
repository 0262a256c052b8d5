package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// The model-based test of issue 10: random sequences of what a workspace
// goes through between a restore and a save (another entry restored over it,
// files replaced keeping size and mtime as tar -x and cp -p do, edits within
// one timestamp tick, adds, deletes, chmods, files turned into links, saves
// with and without --force, restore-key fallbacks, one or two folders). The
// properties:
//
//   - after every save, the entry restored into empty folders is exactly what
//     was on disk when the save started (bytes, modes, mtimes, links);
//   - after every restore, every path of the entry is on disk exactly as in
//     the entry (paths the entry does not have may stay: restore overlays).

// modelPaths are the names the operations touch, per folder. "x" is a file
// in some states and a directory (of "x/y") in others, so entries disagree
// about types too.
var modelPaths = []string{"a", "b", "d/c", "d/e", "x", "x/y"}

// modelDirs are the directories chmod may touch.
var modelDirs = []string{"d", "x"}

// pinned is the mtime most files get: npm pack writes it into every entry,
// and reproducible builds pin every mtime to one value like it.
var pinned = time.Date(1985, 10, 26, 8, 15, 0, 0, time.UTC)

type opKind uint8

const (
	opRestore    opKind = iota // restore a saved entry (arg picks which; flag: by restore key)
	opReplace                  // new file, new inode, same size, mode and mtime
	opModifyTick               // same inode rewritten, same size, mtime put back (one timestamp tick)
	opAdd                      // write a file (replacing whatever is at the path)
	opDelete                   // remove whatever is at the path
	opChmod                    // change the mode of a file or directory
	opSymlink                  // turn the path into a symlink
	opSave                     // save under a key (arg picks it; flag: --force; arg bit: base keys)
	opDropState                // remove the restore state (a workspace from elsewhere)
	opKinds
)

type modelOp struct {
	kind   opKind
	folder int
	path   int
	arg    uint8
}

func (o modelOp) key() string { return fmt.Sprintf("k%d-e", int(o.arg)%3) }
func (o modelOp) p() string   { return modelPaths[o.path%len(modelPaths)] }

func (o modelOp) String() string {
	where := fmt.Sprintf("f%d/%s", o.folder, o.p())
	switch o.kind {
	case opRestore:
		how := "by exact key"
		if o.arg&0x20 != 0 {
			how = "by restore key"
		}
		return fmt.Sprintf("restore saved entry [%d mod count] %s", o.arg, how)
	case opReplace:
		return "replace " + where + " (new inode, same size, mode and mtime)"
	case opModifyTick:
		return "rewrite " + where + " in place (same size, mtime put back)"
	case opAdd:
		return fmt.Sprintf("add %s (%d bytes, %s)", where, modelSize(o.arg), modelMTimeName(o.arg))
	case opDelete:
		return "delete " + where
	case opChmod:
		if o.arg&1 != 0 {
			return fmt.Sprintf("chmod f%d/%s %o", o.folder, modelDirs[int(o.arg>>1)%len(modelDirs)], modelDirModes[int(o.arg>>2)%len(modelDirModes)])
		}
		return fmt.Sprintf("chmod %s %o", where, modelFileModes[int(o.arg>>1)%len(modelFileModes)])
	case opSymlink:
		return fmt.Sprintf("turn %s into a symlink to %s", where, modelLinkTarget(o))
	case opSave:
		s := "save " + o.key()
		if o.arg&0x10 != 0 {
			s += " --force"
		}
		if o.arg&0x40 != 0 {
			s += " (restore keys k)"
		}
		return s
	case opDropState:
		return "remove the restore state files"
	}
	return fmt.Sprintf("op%d", o.kind)
}

var (
	modelFileModes = []os.FileMode{0o644, 0o600, 0o755, 0o444}
	modelDirModes  = []os.FileMode{0o755, 0o750, 0o700}
)

// modelSize is mostly 5 bytes, so that different contents share sizes.
func modelSize(arg uint8) int {
	switch arg % 8 {
	case 0:
		return 0
	case 1:
		return 300
	default:
		return 5
	}
}

func modelMTime(arg uint8) time.Time {
	switch (arg >> 3) % 4 {
	case 0, 1:
		return pinned
	case 2:
		return pinned.Add(time.Second)
	default:
		return time.Time{} // now
	}
}

func modelMTimeName(arg uint8) string {
	m := modelMTime(arg)
	if m.IsZero() {
		return "mtime now"
	}
	return "mtime " + m.Format(time.RFC3339)
}

func modelLinkTarget(o modelOp) string {
	// Names no operation creates: a link never points at a link, so no
	// chain or loop makes the walk drop it.
	t := "tgt" + strconv.Itoa(int(o.arg)%2)
	if strings.Contains(o.p(), "/") {
		t = "../" + t
	}
	return t
}

// modelContent is deterministic in (arg, step), so a sequence replays.
func modelContent(size int, arg uint8, step int) []byte {
	r := rand.New(rand.NewPCG(uint64(arg), uint64(step)))
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return b
}

// modelRun applies ops to fresh folders and a fresh store and returns the
// first broken property, or nil.
// modelSetup is what a sequence runs against.
type modelSetup struct {
	folders  int  // 1 or 2
	dirStore bool // a file:// store (else memory)
}

func (s modelSetup) String() string {
	st := "memory store"
	if s.dirStore {
		st = "file:// store"
	}
	return fmt.Sprintf("%d folder(s), %s", s.folders, st)
}

func modelRun(ctx context.Context, top string, setup modelSetup, ops []modelOp) error {
	m := &model{ctx: ctx, top: top, st: memory.NewStore("model"), want: map[string][]map[string]testtree.Entry{}}
	if setup.dirStore {
		st, err := local.Open(ctx, &url.URL{Scheme: "file", Path: filepath.Join(top, "store")}, store.Options{})
		if err != nil {
			return err
		}
		m.st = st
	}
	folders := setup.folders
	for i := range folders {
		d := filepath.Join(top, "ws", fmt.Sprintf("f%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		m.folders = append(m.folders, d)
	}
	for step, o := range ops {
		o.folder %= folders
		if err := m.apply(step, o); err != nil {
			return fmt.Errorf("step %d (%v): %w", step+1, o, err)
		}
	}
	return nil
}

type model struct {
	ctx     context.Context
	top     string
	st      store.Store
	folders []string
	want    map[string][]map[string]testtree.Entry // key -> per folder: what was on disk at save
	keys    []string                               // saved keys, in order of first save
	checks  int
}

func (m *model) apply(step int, o modelOp) error {
	p := filepath.Join(m.folders[o.folder], filepath.FromSlash(o.p()))
	switch o.kind {
	case opRestore:
		return m.restore(o)
	case opReplace:
		fi, old, err := nonEmptyFile(p)
		if fi == nil {
			return err
		}
		data := differentContent(old, o.arg, step)
		tmp := p + ".model-new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Chmod(tmp, fi.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
			return err
		}
		return os.Rename(tmp, p)
	case opModifyTick:
		fi, old, err := nonEmptyFile(p)
		if fi == nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(differentContent(old, o.arg, step), 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return os.Chtimes(p, fi.ModTime(), fi.ModTime())
	case opAdd:
		if err := makeParents(m.folders[o.folder], o.p()); err != nil {
			return err
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if err := os.WriteFile(p, modelContent(modelSize(o.arg), o.arg, step), 0o644); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o644); err != nil {
			return err
		}
		if mt := modelMTime(o.arg); !mt.IsZero() {
			return os.Chtimes(p, mt, mt)
		}
		return nil
	case opDelete:
		if _, err := os.Lstat(p); err != nil {
			return nil // nothing there (or a file where the path has a directory)
		}
		return os.RemoveAll(p)
	case opChmod:
		if o.arg&1 != 0 {
			d := filepath.Join(m.folders[o.folder], modelDirs[int(o.arg>>1)%len(modelDirs)])
			if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
				return os.Chmod(d, modelDirModes[int(o.arg>>2)%len(modelDirModes)])
			}
			return nil
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return os.Chmod(p, modelFileModes[int(o.arg>>1)%len(modelFileModes)])
		}
		return nil
	case opSymlink:
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		return os.Symlink(modelLinkTarget(o), p)
	case opSave:
		return m.save(o)
	case opDropState:
		for _, f := range m.folders {
			if err := os.Remove(filepath.Join(f, archive.StateFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// nonEmptyFile returns the info and content of p when it is a non-empty
// regular file, else a nil info.
func nonEmptyFile(p string) (fs.FileInfo, []byte, error) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil, nil, nil
	}
	old, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, err
	}
	return fi, old, nil
}

// differentContent is content of old's size that is not old.
func differentContent(old []byte, arg uint8, step int) []byte {
	data := modelContent(len(old), arg, step+1000)
	if string(data) == string(old) {
		data[0] ^= 0x20
	}
	return data
}

// makeParents makes the directories above rel, replacing files and links
// in the way (as unpacking a tarball does).
func makeParents(root, rel string) error {
	parts := strings.Split(rel, "/")
	cur := root
	for _, c := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, c)
		fi, err := os.Lstat(cur)
		if err == nil && fi.IsDir() {
			continue
		}
		if err == nil {
			if err := os.Remove(cur); err != nil {
				return err
			}
		}
		if err := os.Mkdir(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// snapshot records every folder, without the restore state.
func (m *model) snapshot(folders []string) ([]map[string]testtree.Entry, error) {
	out := make([]map[string]testtree.Entry, len(folders))
	for i, f := range folders {
		snap, err := testtree.Read(f, archive.StateFileName)
		if err != nil {
			return nil, err
		}
		out[i] = snap
	}
	return out, nil
}

// overlayDiff is testtree.Diff of the paths want has: restore leaves
// paths its entry lacks.
func overlayDiff(want, got map[string]testtree.Entry) []string {
	mine := make(map[string]testtree.Entry, len(want))
	for p := range want {
		if g, ok := got[p]; ok {
			mine[p] = g
		}
	}
	return testtree.Diff(want, mine)
}

func (m *model) save(o modelOp) error {
	key := o.key()
	force := o.arg&0x10 != 0
	var baseKeys []string
	if o.arg&0x40 != 0 {
		baseKeys = []string{"k"}
	}
	before, err := m.snapshot(m.folders)
	if err != nil {
		return err
	}
	res, err := Save(m.ctx, m.st, SaveOptions{Key: key, Folders: m.folders, BaseKeys: baseKeys, Force: force, PackSize: 1 << 10})
	if err != nil {
		return fmt.Errorf("save failed: %w", err)
	}
	_, exists := m.want[key]
	empty := true
	for _, s := range before {
		empty = empty && len(s) == 0
	}
	switch {
	case res.Skipped && (exists && !force || empty):
		return nil
	case res.Skipped:
		return fmt.Errorf("save skipped: %s", res.SkipReason)
	case exists && !force:
		return errors.New("save overwrote an existing key without --force")
	}
	if !exists {
		m.keys = append(m.keys, key)
	}
	m.want[key] = before
	// The entry, restored into empty folders, is what was on disk.
	m.checks++
	fresh := make([]string, len(m.folders))
	for i := range fresh {
		fresh[i] = filepath.Join(m.top, fmt.Sprintf("check%d", m.checks), fmt.Sprintf("f%d", i))
	}
	r, err := Restore(m.ctx, m.st, RestoreOptions{Key: key, Folders: fresh})
	if err != nil {
		return fmt.Errorf("restoring the saved entry %s into empty folders: %w", key, err)
	}
	if !r.Fetched || !r.Restored {
		return fmt.Errorf("restoring the saved entry %s: %+v", key, r)
	}
	got, err := m.snapshot(fresh)
	if err != nil {
		return err
	}
	for i := range fresh {
		if d := testtree.Diff(before[i], got[i]); len(d) > 0 {
			return fmt.Errorf("entry %s (base %q, %d files reused) restored into an empty folder differs from what was on disk in f%d at save: %s", key, res.Base, res.ReusedFiles, i, strings.Join(d, "; "))
		}
	}
	return os.RemoveAll(filepath.Join(m.top, fmt.Sprintf("check%d", m.checks)))
}

func (m *model) restore(o modelOp) error {
	if len(m.keys) == 0 {
		return nil
	}
	key := m.keys[int(o.arg)%len(m.keys)]
	opts := RestoreOptions{Key: key, Folders: m.folders}
	if o.arg&0x20 != 0 {
		opts.Key, opts.RestoreKeys = "miss", []string{strings.TrimSuffix(key, "e")}
	}
	r, err := Restore(m.ctx, m.st, opts)
	if err != nil {
		return fmt.Errorf("restore failed: %w", err)
	}
	if !r.Restored || r.MatchedKey != key || r.Fetched != (opts.Key == key) {
		return fmt.Errorf("restore of %s: result %+v", key, r)
	}
	got, err := m.snapshot(m.folders)
	if err != nil {
		return err
	}
	for i := range m.folders {
		if d := overlayDiff(m.want[key][i], got[i]); len(d) > 0 {
			return fmt.Errorf("after restoring %s (%d files kept as already in place), f%d differs from the entry: %s", key, r.Present, i, strings.Join(d, "; "))
		}
	}
	return nil
}

// randomOps draws a sequence; saves and restores are frequent so that
// every sequence checks something.
func randomOps(r *rand.Rand) (modelSetup, []modelOp) {
	folders := 1 + r.IntN(2)
	setup := modelSetup{folders: folders, dirStore: r.IntN(20) == 0} // a file:// store syncs: slower
	n := 3 + r.IntN(8)
	ops := make([]modelOp, 0, n+1)
	// Start from something saved: most sequences are about what follows.
	for range 1 + r.IntN(3) {
		ops = append(ops, modelOp{kind: opAdd, folder: r.IntN(folders), path: r.IntN(len(modelPaths)), arg: uint8(r.UintN(256))})
	}
	ops = append(ops, modelOp{kind: opSave, arg: uint8(r.UintN(256))})
	for range n {
		k := opKind(r.IntN(int(opKinds)))
		if r.IntN(3) == 0 {
			k = []opKind{opRestore, opSave, opReplace}[r.IntN(3)]
		}
		ops = append(ops, modelOp{kind: k, folder: r.IntN(folders), path: r.IntN(len(modelPaths)), arg: uint8(r.UintN(256))})
	}
	return setup, ops
}

// opsFromBytes decodes a fuzz input: the first byte picks 1 or 2 folders
// (bit 0) and the store (bit 1),
// then 4 bytes per operation (kind, folder, path, argument).
func opsFromBytes(data []byte) (modelSetup, []modelOp) {
	if len(data) == 0 {
		return modelSetup{folders: 1}, nil
	}
	folders := 1 + int(data[0])%2
	var ops []modelOp
	for b := data[1:]; len(b) >= 4 && len(ops) < 32; b = b[4:] {
		ops = append(ops, modelOp{kind: opKind(b[0] % byte(opKinds)), folder: int(b[1]) % folders, path: int(b[2]) % len(modelPaths), arg: b[3]})
	}
	return modelSetup{folders: folders, dirStore: data[0]&2 != 0}, ops
}

func opsToBytes(setup modelSetup, ops []modelOp) []byte {
	b := byte(setup.folders - 1)
	if setup.dirStore {
		b |= 2
	}
	out := []byte{b}
	for _, o := range ops {
		out = append(out, byte(o.kind), byte(o.folder), byte(o.path), o.arg)
	}
	return out
}

// shrink drops operations while the sequence still fails, for a readable
// report.
func shrink(ctx context.Context, base string, setup modelSetup, ops []modelOp) ([]modelOp, error) {
	run := func(ops []modelOp) error {
		top, err := os.MkdirTemp(base, "shrink-")
		if err != nil {
			return nil
		}
		defer os.RemoveAll(top)
		return modelRun(ctx, top, setup, ops)
	}
	last := run(ops)
	for changed := true; changed; {
		changed = false
		for i := range ops {
			try := append(append([]modelOp(nil), ops[:i]...), ops[i+1:]...)
			if err := run(try); err != nil {
				ops, last, changed = try, err, true
				break
			}
		}
	}
	return ops, last
}

func formatOps(setup modelSetup, ops []modelOp) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v:", setup)
	for i, o := range ops {
		fmt.Fprintf(&b, "\n  %2d. %v", i+1, o)
	}
	return b.String()
}

// TestModelSaveRestore runs 2,000 random sequences (200 with -short).
// CACHE_MODEL_SEED=<seed> replays one sequence; CACHE_MODEL_RUNS sets the
// count.
func TestModelSaveRestore(t *testing.T) {
	runs := 2000
	if testing.Short() {
		runs = 200
	}
	if s := os.Getenv("CACHE_MODEL_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("CACHE_MODEL_RUNS=%q: %v", s, err)
		}
		runs = n
	}
	first := uint64(time.Now().UnixNano())
	if s := os.Getenv("CACHE_MODEL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CACHE_MODEL_SEED=%q: %v", s, err)
		}
		first, runs = seed, 1
	}
	ctx := context.Background()
	base := t.TempDir()
	start := time.Now()
	// Sequences run on every core; the first failing one (in seed order)
	// is reported.
	type failure struct {
		i   int
		err error
	}
	var (
		mu    sync.Mutex
		fails []failure
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				mu.Lock()
				stop := i >= runs || len(fails) > 0
				mu.Unlock()
				if stop {
					return
				}
				setup, ops := randomOps(rand.New(rand.NewPCG(first+uint64(i), 0x10)))
				top, err := os.MkdirTemp(base, "seq-")
				if err == nil {
					err = modelRun(ctx, top, setup, ops)
					os.RemoveAll(top)
				}
				if err != nil {
					mu.Lock()
					fails = append(fails, failure{i, err})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(fails) > 0 {
		f := slices.MinFunc(fails, func(a, b failure) int { return a.i - b.i })
		seed := first + uint64(f.i)
		setup, ops := randomOps(rand.New(rand.NewPCG(seed, 0x10)))
		small, serr := shrink(ctx, base, setup, ops)
		t.Fatalf("sequence %d of %d fails (replay: CACHE_MODEL_SEED=%d go test -run TestModelSaveRestore ./internal/engine/):\n%v\n%s\nshortest failing subsequence:\n%v\n%s\nfuzz input: %q",
			f.i+1, runs, seed, f.err, formatOps(setup, ops), serr, formatOps(setup, small), opsToBytes(setup, small))
	}
	t.Logf("%d sequences in %v (first seed %d)", runs, time.Since(start).Round(time.Millisecond), first)
}

// FuzzModel: the same properties over an operation sequence decoded from
// the input (see opsFromBytes).
func FuzzModel(f *testing.F) {
	for seed := range uint64(8) {
		setup, ops := randomOps(rand.New(rand.NewPCG(seed, 0x10)))
		f.Add(opsToBytes(setup, ops))
	}
	// The first reproduction of issue 10, spelled out: save, replace a file
	// keeping size and mtime, save again, restore.
	f.Add(opsToBytes(modelSetup{folders: 1}, []modelOp{
		{kind: opAdd, path: 0, arg: 2}, {kind: opSave, arg: 0}, {kind: opReplace, path: 0, arg: 3},
		{kind: opSave, arg: 1}, {kind: opRestore, arg: 0}, {kind: opRestore, arg: 1},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		setup, ops := opsFromBytes(data)
		if err := modelRun(context.Background(), t.TempDir(), setup, ops); err != nil {
			t.Fatalf("%v\n%s", err, formatOps(setup, ops))
		}
	})
}
