package engine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// FuzzReadState: a restore state file holds whatever the workspace holds.
// Any bytes give either no base (the save then reads every file) or a state
// whose index matches its digest and validates; never a panic.
func FuzzReadState(f *testing.F) {
	// Seed with a real state file.
	st := memory.NewStore("t")
	src := f.TempDir()
	testtree.Make(f, src)
	save(f, st, "k", src)
	real, err := os.ReadFile(filepath.Join(src, archive.StateFileName))
	if err != nil {
		f.Fatal(err)
	}
	if s, why := readState([]string{src}); s == nil || s.Folders != 1 {
		f.Fatalf("the state a save wrote does not read back (%s): the seed would test nothing", why)
	}
	f.Add(real)
	f.Add([]byte(`{"format":2,"key":"k","index":"sha256:00","index_blob":"AAAA"}`))
	f.Add([]byte(`{"format":2,"written":"not a time","index_blob":123}`))
	f.Add([]byte(`{"format":2,"root":0,"dev":[1],"ino":[2,3],"ctime":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, archive.StateFileName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, why := readState([]string{dir})
		if s == nil {
			if why == "" {
				t.Fatal("no state and no reason")
			}
			return
		}
		if s.X.Validate() != nil || len(s.IDs) != len(s.X.Entries) {
			t.Fatal("readState returned an index that does not validate, or records that do not match it")
		}
	})
}
