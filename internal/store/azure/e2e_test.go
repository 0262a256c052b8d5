package azstore_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/engine/enginetest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// testSaveRestore runs the engine's end-to-end checks against this backend:
// a real tree saved, restored and compared; an incremental save that sends
// only new content; a save killed half way that leaves the previous entry.
func testSaveRestore(t *testing.T, st store.Store) { enginetest.SaveRestore(t, st) }
