// Package all registers every store backend with a store.Mux, explicitly
// and in one place.
package all

import (
	"github.com/tekton-cache/tekton-cache/internal/store"
	azstore "github.com/tekton-cache/tekton-cache/internal/store/azure"
	gcsstore "github.com/tekton-cache/tekton-cache/internal/store/gcs"
	"github.com/tekton-cache/tekton-cache/internal/store/httpstore"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	s3store "github.com/tekton-cache/tekton-cache/internal/store/s3"
)

// Mux returns a store.Mux that opens every URL scheme this build supports.
func Mux() *store.Mux {
	var m store.Mux
	m.Register("file", local.Open)
	m.Register("oci", oci.Open)
	m.Register(s3store.Scheme, s3store.Open)
	m.Register(gcsstore.Scheme, gcsstore.Open)
	m.Register(azstore.Scheme, azstore.Open)
	m.Register("http", httpstore.Open)
	m.Register("https", httpstore.Open)
	return &m
}
