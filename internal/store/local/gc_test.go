package local_test

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/gc/gctest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

func TestPrune(t *testing.T) {
	gctest.Run(t, func(t *testing.T) store.Store { return store.Checked(open(t)) })
}
