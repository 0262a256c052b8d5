package memory_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

func TestPrune(t *testing.T) {
	gctest.Run(t, func(t *testing.T) store.Store {
		return store.Checked(store.WithRetries(memory.NewStore(t.Name()), store.Options{}))
	})
}
