package memory_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.NewStore(t.Name()) }, storetest.Options{Lacks: []string{"BlobStager"}})
}

// TestConformanceWrapped runs the suite through the wrappers Mux.Open puts
// around a backend: store.As finds the capabilities through them.
func TestConformanceWrapped(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return store.Checked(store.WithRetries(memory.NewStore(t.Name()), store.Options{}))
	}, storetest.Options{Lacks: []string{"BlobStager"}})
}

// BenchmarkConformance measures the store operations in memory.
func BenchmarkConformance(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Store { return memory.NewStore(b.Name()) })
}
