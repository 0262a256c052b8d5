package local_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		dir := t.TempDir()
		t.Cleanup(func() { noTempFiles(t, dir) })
		s, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: dir}, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// noTempFiles checks that no failed or cancelled put left a temp file behind.
func noTempFiles(t *testing.T, dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestOpenErrors(t *testing.T) {
	for _, raw := range []string{"file://host/path", "file://", "file:///"} {
		u, _ := url.Parse(raw)
		if _, err := local.Open(context.Background(), u, store.Options{}); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", raw)
		}
	}
}
