package engine

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// folderNames names each folder as an entry records it (store.Ref.Folders):
// relative to the working dir wd ("" is the current directory) with '/'
// separators, or the cleaned absolute path when it lies outside wd. The
// same folders give the same names in any workspace path.
func folderNames(wd string, abs []string) []string {
	if wd == "" {
		wd = "."
	}
	awd, err := filepath.Abs(wd)
	names := make([]string, len(abs))
	for i, a := range abs {
		names[i] = filepath.ToSlash(a)
		if err != nil {
			continue
		}
		if rel, rerr := filepath.Rel(awd, a); rerr == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			names[i] = filepath.ToSlash(rel)
		}
	}
	return names
}

func baseName(n string) string { return filepath.Base(filepath.FromSlash(n)) }

// folderMap says where each of an entry's folders goes.
type folderMap struct {
	// dests are the directories, in the order of the entry's roots.
	dests []string
	// extra are the asked-for folders the entry does not hold (left as they are).
	extra []string
	// moved is set when the folders were matched by name, not position.
	moved bool
}

// entryFolders returns the folders an entry holds: the ref's record, or
// for an older entry the base names its index roots hold (nil x: unknown).
func entryFolders(ref *store.Ref, x *archive.Index) (names []string, byBase bool) {
	if len(ref.Folders) > 0 && (x == nil || len(ref.Folders) == len(x.Roots)) {
		return ref.Folders, false
	}
	if x == nil {
		return nil, true
	}
	return x.Roots, true
}

// mapFolders matches an entry's folders to the asked-for ones (names as
// folderNames gives, abs the directories): by name, then by base name when
// that is unambiguous, so that a reordered or extended list restores each
// folder's content into its own folder (a single folder goes into a single
// folder whatever their names). It returns a reason when some
// folder of the entry has nowhere to go: restoring it elsewhere would put
// one folder's content into another.
func mapFolders(key string, held []string, byBase bool, names, abs []string) (*folderMap, string) {
	if (!byBase && slices.Equal(held, names)) || (len(held) == 1 && len(names) == 1) {
		// One folder into one: nothing can land in the wrong place, wherever
		// the folder is now (another workspace path, a renamed cache dir).
		return &folderMap{dests: abs}, ""
	}
	want := names
	if byBase {
		want = make([]string, len(names))
		for i, n := range names {
			want[i] = baseName(n)
		}
		if slices.Equal(held, want) {
			return &folderMap{dests: abs}, ""
		}
	}
	m := &folderMap{dests: make([]string, len(held)), moved: true}
	used := make([]bool, len(names))
	for i, h := range held {
		for j, w := range want {
			if !used[j] && w == h {
				m.dests[i], used[j] = abs[j], true
				break
			}
		}
	}
	// Then by base name, where exactly one folder on each side has it.
	count := func(list []string, skip func(int) bool, b string) (n, at int) {
		for k, v := range list {
			if !skip(k) && baseName(v) == b {
				n, at = n+1, k
			}
		}
		return n, at
	}
	for i, h := range held {
		if m.dests[i] != "" {
			continue
		}
		b := baseName(h)
		nh, _ := count(held, func(k int) bool { return m.dests[k] != "" }, b)
		nw, j := count(want, func(k int) bool { return used[k] }, b)
		if nh == 1 && nw == 1 {
			m.dests[i], used[j] = abs[j], true
		}
	}
	var missing []string
	for i, d := range m.dests {
		if d == "" {
			missing = append(missing, held[i])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Sprintf("entry %s holds folder(s) %q, these were asked for: %q (no folder for %q; restoring by position could put one folder's content into another)", key, held, names, missing)
	}
	for j, u := range used {
		if !u {
			m.extra = append(m.extra, names[j])
		}
	}
	return m, ""
}

// sameFolderSet tells whether an entry holding held serves the folders
// names, in any order.
func sameFolderSet(held []string, byBase bool, names []string) bool {
	if byBase {
		b := make([]string, len(names))
		for i, n := range names {
			b[i] = baseName(n)
		}
		names = b
	}
	a, c := slices.Clone(held), slices.Clone(names)
	slices.Sort(a)
	slices.Sort(c)
	return slices.Equal(a, c)
}

// checkFolders refuses folder lists that cannot be saved or restored
// faithfully: an empty name (an unset variable), the same folder twice, or a
// folder inside another (its files would be in two roots, and a restore of
// one would overwrite the other). It returns the absolute paths.
func checkFolders(folders []string) ([]string, error) {
	abs := make([]string, len(folders))
	for i, f := range folders {
		if strings.TrimSpace(f) == "" {
			return nil, fmt.Errorf("%w: folder %d is empty (an unset variable?)", ErrEmptyFolder, i+1)
		}
		a, err := filepath.Abs(f)
		if err != nil {
			return nil, fmt.Errorf("%w: folder %q: %v", ErrConfig, f, err)
		}
		abs[i] = a
	}
	for i, a := range abs {
		for j, b := range abs {
			if i == j {
				continue
			}
			if a == b {
				return nil, fmt.Errorf("%w: folder %s is given twice: pass each folder once", ErrConfig, folders[i])
			}
			if strings.HasPrefix(b, a+string(filepath.Separator)) || a == string(filepath.Separator) {
				return nil, fmt.Errorf("%w: folder %s is inside folder %s: pass only the outer one, or folders side by side", ErrConfig, folders[j], folders[i])
			}
		}
	}
	return abs, nil
}

// removeLeftovers removes, in each folder, what interrupted runs left: the
// temporary names at its top, and the deeper ones in temps (by folder
// position), without following symlinks.
func removeLeftovers(folders []string, temps map[int][]string, logf func(string, ...any)) {
	for i, f := range folders {
		if err := archive.RemoveTemps(f, temps[i]...); err != nil {
			logf("warning: removing what an interrupted run left: %v", err)
		}
	}
}
