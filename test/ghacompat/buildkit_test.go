package ghacompat

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/server/gha/ghatest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// TestBuildKitCallsV032: BuildKit v0.32's go-actions-cache, v1 and v2.
func TestBuildKitCallsV032(t *testing.T) {
	ghatest.RunBuildKit(t, func(t *testing.T) store.Store { return store.Checked(memory.NewStore(t.Name())) })
}
