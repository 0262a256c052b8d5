// Package all registers every store backend with a store.Mux, explicitly
// and in one place.
package all

import (
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
)

// Mux returns a store.Mux that opens every URL scheme this build supports.
func Mux() *store.Mux {
	var m store.Mux
	m.Register("file", local.Open)
	m.Register("oci", oci.Open)
	return &m
}
