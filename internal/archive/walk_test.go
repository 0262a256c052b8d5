package archive

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWalkSkipsNamesThatCannotBeStored: a file or a directory whose name
// an index cannot hold (a backslash) is skipped, and nothing under such a
// directory is listed: the walk checks each name, not each whole path.
func TestWalkSkipsNamesThatCannotBeStored(t *testing.T) {
	src := t.TempDir()
	for _, p := range []string{`ok/f`, `ok/bad\name`, `bad\dir/f`, `bad\dir/sub/g`} {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	x, skipped, err := Walk([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range x.Entries {
		if ValidPath(e.Path) != nil {
			t.Errorf("the index holds %q", e.Path)
		}
		paths = append(paths, e.Path)
	}
	if len(paths) != 2 || paths[0] != "ok" || paths[1] != "ok/f" {
		t.Errorf("entries %q, want [ok ok/f]", paths)
	}
	if len(skipped) != 2 {
		t.Errorf("skipped %+v, want the two names with a backslash", skipped)
	}
	for _, name := range []string{"a", ".a", "a..b", "..a", "a b"} {
		if !validName([]byte(name)) || ValidPath(name) != nil || ValidPath("d/"+name) != nil {
			t.Errorf("%q: validName and ValidPath disagree", name)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", `a\b`, "a\x00b"} {
		if validName([]byte(name)) {
			t.Errorf("validName(%q) = true", name)
		}
	}
}

// TestWalkOrderIsTheIndexOrder: the walk lists its entries in the order of
// CompareEntries (root, then path as strings.Compare orders it), names
// that sort around '/' included ("a-b" and "a.b" before "a/x", "a0"
// after it), however the directories nest, in several roots.
func TestWalkOrderIsTheIndexOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// The bytes next to '/' (0x2f) on both sides, a space, and UTF-8.
	parts := []string{"a", "b", "-", ".", "0", " ", "!", "~", "\u00e9", "ab", "a-", "a."}
	name := func() string {
		n := ""
		for range 1 + rng.IntN(3) {
			n += parts[rng.IntN(len(parts))]
		}
		if n == "." || n == ".." {
			n += "x"
		}
		return n
	}
	var roots []string
	var want []Entry
	for root := range 2 {
		dir := t.TempDir()
		roots = append(roots, dir)
		paths := map[string]bool{}
		var grow func(rel string, depth int)
		grow = func(rel string, depth int) {
			for range 2 + rng.IntN(6) {
				p := name()
				if rel != "" {
					p = rel + "/" + p
				}
				if paths[p] {
					continue
				}
				paths[p] = true
				full := filepath.Join(dir, filepath.FromSlash(p))
				if depth < 4 && rng.IntN(2) == 0 {
					if err := os.Mkdir(full, 0o755); err != nil {
						t.Fatal(err)
					}
					grow(p, depth+1)
				} else if err := os.WriteFile(full, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		grow("", 0)
		for p := range paths {
			want = append(want, Entry{Root: root, Path: p})
		}
	}
	slices.SortFunc(want, func(a, b Entry) int { return CompareEntries(&a, &b) })
	x, _, err := Walk(roots)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(x.Entries), len(want))
	}
	for i := range want {
		if got := x.Entries[i]; got.Root != want[i].Root || got.Path != want[i].Path {
			t.Fatalf("entry %d is %d:%q, want %d:%q", i, got.Root, got.Path, want[i].Root, want[i].Path)
		}
		if x.IDs[i].Ino == 0 {
			t.Fatalf("entry %d (%q) has no identity", i, x.Entries[i].Path)
		}
	}
	if n := len(want); n < 200 {
		t.Fatalf("only %d entries: the tree is too small to say", n)
	}
}

// TestWalkNeverEntersADirectorySwappedForALink: a directory replaced by a
// symlink to elsewhere after its parent was listed (a process of the build
// racing the save) is not walked into, however deep (below and past
// maxHeldDepth, where directories are opened by their path, and a link
// may then be any component of it): the walk fails, and lists no file
// from outside the folder. Opening the directory by its path followed
// the link.
func TestWalkNeverEntersADirectorySwappedForALink(t *testing.T) {
	for _, c := range []struct {
		depth  int
		parent bool // the parent of the directory is swapped, not itself
	}{{1, false}, {maxHeldDepth + 2, false}, {maxHeldDepth + 2, true}} {
		depth := c.depth
		base := t.TempDir()
		src, outside := filepath.Join(base, "src"), filepath.Join(base, "outside")
		deep := src
		for i := 0; i < depth; i++ {
			deep = filepath.Join(deep, "d")
		}
		target := filepath.Join(deep, "sub")
		swapped, secret := target, filepath.Join(outside, "secret")
		if c.parent {
			swapped, secret = deep, filepath.Join(outside, "sub", "secret")
		}
		for _, f := range []string{filepath.Join(target, "mine"), secret} {
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		beforeOpenDir = func(abs string) {
			if abs != target {
				return
			}
			if err := os.Rename(swapped, swapped+".old"); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(outside, swapped); err != nil {
				t.Error(err)
			}
		}
		x, _, err := Walk([]string{src})
		beforeOpenDir = nil
		if err == nil {
			for _, e := range x.Entries {
				if filepath.Base(e.Path) == "secret" {
					t.Errorf("%+v: the walk went through the link: %q", c, e.Path)
				}
			}
			t.Errorf("%+v: the walk did not fail on a directory swapped for a link", c)
		}
	}
}
