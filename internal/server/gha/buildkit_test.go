package gha_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/server/gha/ghatest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// openStore is a store of the test: a directory (which stages blobs) or
// memory (which does not: uploads go through the spool and two reads).
func openStore(t *testing.T, url string) store.Store {
	t.Helper()
	st, err := all.Mux().Open(t.Context(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestBuildKitCalls: go-actions-cache at the version this module requires
// (its newest) makes BuildKit's calls, v1 and v2, over a directory and
// over memory. test/ghacompat runs the same at BuildKit v0.32's version.
func TestBuildKitCalls(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		ghatest.RunBuildKit(t, func(t *testing.T) store.Store { return openStore(t, "file://"+t.TempDir()) })
	})
	t.Run("memory", func(t *testing.T) {
		ghatest.RunBuildKit(t, func(t *testing.T) store.Store { return store.Checked(memory.NewStore(t.Name())) })
	})
}
