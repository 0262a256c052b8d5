// Package testtree builds directory trees for tests and compares them
// entry by entry: type, mode, mtime, size, content and link target.
package testtree

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Old is the mtime Make gives everything: far in the past, to prove mtimes
// are restored rather than set to now.
var Old = time.Date(2001, 2, 3, 4, 5, 6, 789_000_000, time.UTC)

// Make fills dir with a tree holding every kind of entry a cache has:
// nested and empty directories, empty and large files, modes 0600, 0644,
// 0755 and a read-only directory, symlinks to a file and to a directory
// inside the root, and old mtimes.
func Make(t testing.TB, dir string) {
	t.Helper()
	big := make([]byte, 3<<20)
	rand.Read(big) //nolint:errcheck // crypto/rand does not fail
	files := []struct {
		path string
		mode os.FileMode
		data []byte
	}{
		{"a.txt", 0o644, []byte("hello\n")},
		{"empty", 0o644, nil},
		{"secret", 0o600, []byte("private\n")},
		{"group-writable", 0o664, []byte("the umask must not strip this\n")},
		{"bin/tool", 0o755, []byte("#!/bin/sh\necho tool\n")},
		{"deep/er/and/deeper/file.go", 0o644, bytes.Repeat([]byte("package x\n"), 1000)},
		{"deep/er/big.bin", 0o644, big},
		{"ro/locked.txt", 0o444, []byte("read only\n")},
	}
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, f.data, f.mode))
		must(t, os.Chmod(p, f.mode))
	}
	must(t, os.MkdirAll(filepath.Join(dir, "empty-dir/nested-empty"), 0o750))
	must(t, os.Symlink("a.txt", filepath.Join(dir, "link-to-file")))
	must(t, os.Symlink("../../a.txt", filepath.Join(dir, "deep/er/up-link")))
	must(t, os.Symlink("deep/er", filepath.Join(dir, "link-to-dir")))
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	Touch(t, dir, Old)
	t.Cleanup(func() { Chmod(t, dir) })
}

// Touch sets the mtime of everything under dir (links themselves included).
func Touch(t testing.TB, dir string, when time.Time) {
	t.Helper()
	var paths []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // test helper
		must(t, err)
		paths = append(paths, p)
		return nil
	})
	// Children first, so that setting a child does not move its parent's mtime.
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for _, p := range paths {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			must(t, lchtimes(p, when))
			continue
		}
		must(t, os.Chtimes(p, when, when))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Entry is what Snapshot records of a path.
type Entry struct {
	Mode  fs.FileMode
	MTime int64
	Size  int64
	Data  string // content digest for files
	Link  string
}

// Snapshot records every entry under dir but dir itself and the names skip
// returns true for.
func Snapshot(t testing.TB, dir string, skip ...string) map[string]Entry {
	t.Helper()
	out, err := Read(dir, skip...)
	must(t, err)
	return out
}

// Read is Snapshot returning its error, for loops that must not stop a
// test (fuzzing, shrinking a failing sequence).
func Read(dir string, skip ...string) (map[string]Entry, error) {
	out := map[string]Entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		for _, s := range skip {
			if d.Name() == s {
				return nil
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := Entry{Mode: fi.Mode(), MTime: fi.ModTime().UnixNano()}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Size = int64(len(data))
			e.Data = string(data)
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, _ = os.Readlink(p)
		}
		out[filepath.ToSlash(rel)] = e
		return nil
	})
	return out, err
}

// Equal fails t with every difference between the trees want and got.
func Equal(t testing.TB, want, got map[string]Entry) {
	t.Helper()
	if diffs := Diff(want, got); len(diffs) > 0 {
		t.Fatalf("trees differ in %d places:\n  %s", len(diffs), join(diffs))
	}
}

// Diff lists every difference between the trees want and got, sorted.
func Diff(want, got map[string]Entry) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing: "+p)
		case g.Mode != w.Mode:
			diffs = append(diffs, fmt.Sprintf("%s: mode %v, want %v", p, g.Mode, w.Mode))
		case g.MTime != w.MTime:
			diffs = append(diffs, fmt.Sprintf("%s: mtime %v, want %v", p, time.Unix(0, g.MTime), time.Unix(0, w.MTime)))
		case g.Size != w.Size || g.Data != w.Data:
			diffs = append(diffs, fmt.Sprintf("%s: content differs (%d bytes %q, want %d bytes %q)", p, g.Size, clip(g.Data), w.Size, clip(w.Data)))
		case g.Link != w.Link:
			diffs = append(diffs, fmt.Sprintf("%s: link %q, want %q", p, g.Link, w.Link))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "unexpected: "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func clip(s string) string {
	if len(s) > 12 {
		return s[:12] + "..."
	}
	return s
}

func join(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(x)
	}
	return b.String()
}

// Chmod makes everything under dir writable so t.TempDir can remove it.
func Chmod(t testing.TB, dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // cleanup
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
}

// WithPrefix lists the paths under dir whose names start with prefix (a
// killed run's temporary files).
func WithPrefix(dir, prefix string) []string {
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // a listing
		if err == nil && strings.HasPrefix(d.Name(), prefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}
