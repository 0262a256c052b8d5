// Package format holds what every layer must agree on about a cache entry
// (docs/FORMAT.md): the version range of the entry format, the media types
// of its blobs, the OCI artifact type of an entry, the descriptor that
// points at a blob, and where the version shows in object paths.
//
// It is a leaf: it imports the digest package and the standard library
// only (a layering test checks), so that archive, store, the backends and
// engine can all use it without importing each other.
package format

import (
	"errors"
	"fmt"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// The entry format versions. Version is what this build writes; readers
// accept any version from MinVersion to MaxVersion, each through its own
// decoder, so that a version 2 can be read beside version 1.
const (
	Version    = 1
	MinVersion = 1
	MaxVersion = 1
)

// Media types of an entry's blobs, also its OCI media types.
const (
	// IndexMediaType is the index: zstd-compressed JSON.
	IndexMediaType = "application/vnd.tekton-cache.index.v1+json+zstd"
	// PackMediaType is a pack: a zstd-compressed tar stream, which is a
	// valid OCI layer.
	PackMediaType = "application/vnd.oci.image.layer.v1.tar+zstd"
	// ArtifactType marks an OCI manifest as a tekton-cache entry.
	ArtifactType = "application/vnd.tekton-cache.entry.v1"
)

// ErrUnsupported is wrapped by the error of Check for a version this build
// cannot read.
var ErrUnsupported = errors.New("unsupported format version")

// Check returns nil when version v can be read by this build, else an
// error that wraps ErrUnsupported and names what (an index, a ref...) had it.
func Check(what string, v int) error {
	if v < MinVersion || v > MaxVersion {
		if MinVersion == MaxVersion {
			return fmt.Errorf("%s has format %d; this build reads format %d: %w", what, v, MinVersion, ErrUnsupported)
		}
		return fmt.Errorf("%s has format %d; this build reads formats %d to %d: %w", what, v, MinVersion, MaxVersion, ErrUnsupported)
	}
	return nil
}

// Prefix is the first element of the object paths of version v in an
// object store ("v1/"), so that two versions' objects never mix.
func Prefix(v int) string { return fmt.Sprintf("v%d/", v) }

// Descriptor points at a blob: its digest and size.
type Descriptor struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// Validate checks that d names a well-formed digest and a size that is not negative.
func (d Descriptor) Validate() error {
	if err := d.Digest.Validate(); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("blob %s has negative size %d", d.Digest, d.Size)
	}
	return nil
}
