package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestGoldenDigests pins the digests of a fixed tree. The same tree must
// always give the same blobs (so stores deduplicate across runs and
// machines); a change here is a change of the entry format (docs/FORMAT.md)
// and needs a new format version.
func TestGoldenDigests(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	files := map[string]string{
		"go.mod":             "module example.com/golden\n",
		"pkg/a.go":           "package pkg\n\nfunc A() int { return 1 }\n",
		"pkg/sub/b.txt":      "bee\n",
		"zz/empty-file":      "",
		"pkg/sub/deep/c.bin": string(make([]byte, 70000)),
	}
	for p, c := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(c), 0o644)
		os.Chmod(full, 0o644)
	}
	os.Chmod(filepath.Join(root, "pkg/a.go"), 0o755)
	os.Symlink("pkg/a.go", filepath.Join(root, "link"))
	os.Mkdir(filepath.Join(root, "empty-dir"), 0o700)
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if fi.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	os.Chmod(filepath.Join(root, "empty-dir"), 0o700)
	testtree.Touch(t, root, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))

	st := memory.NewStore("golden")
	if _, err := Save(context.Background(), st, SaveOptions{Key: "golden", Folders: []string{root}}); err != nil {
		t.Fatal(err)
	}
	ref, err := st.GetRef(context.Background(), "golden")
	if err != nil {
		t.Fatal(err)
	}
	const (
		wantIndex = "sha256:f95daf0ebb69da4cef9a18121c18e6bbbff6c5cbdd7b249a927585f6758048e7"
		wantPack  = "sha256:d20db2a39f5abb68eb4c93835faf542c59e622fb18a4c845e81301837b593e6c"
	)
	if len(ref.Packs) != 1 {
		t.Fatalf("%d packs, want 1", len(ref.Packs))
	}
	if got := ref.Index.Digest.String(); got != wantIndex {
		t.Errorf("index digest = %s, want %s", got, wantIndex)
	}
	if got := ref.Packs[0].Digest.String(); got != wantPack {
		t.Errorf("pack digest = %s, want %s", got, wantPack)
	}
}
