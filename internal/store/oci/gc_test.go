package oci_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// TestPrune: a registry's entries are pruned through its API (tags and
// manifests); its own garbage collection takes the blobs.
func TestPrune(t *testing.T) {
	host := registry(t, false)
	gctest.Run(t, func(t *testing.T) store.Store { return store.Checked(openStore(t, host)) })
}
