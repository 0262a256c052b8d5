package archive

import (
	"os"
	"path/filepath"
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
		if !validName(name) || ValidPath(name) != nil || ValidPath("d/"+name) != nil {
			t.Errorf("%q: validName and ValidPath disagree", name)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", `a\b`, "a\x00b"} {
		if validName(name) {
			t.Errorf("validName(%q) = true", name)
		}
	}
}
