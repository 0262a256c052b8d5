package oci

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// Media types and annotations of an entry's manifest (docs/OCI.md).
const (
	// ManifestMediaType is the media type of an entry's manifest.
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"
	// The artifact type is format.ArtifactType, the config descriptor
	// (the entry's index) has format.IndexMediaType and the layers (its
	// packs) format.PackMediaType.

	// AnnotationKey holds the cache key the entry was saved under.
	AnnotationKey = "dev.tekton-cache.key"
	// AnnotationFormat holds the entry format version (format.Version).
	AnnotationFormat = "dev.tekton-cache.format"
	// AnnotationTool holds the version of the program that saved the entry.
	AnnotationTool = "dev.tekton-cache.tool"
	// AnnotationPlatform holds GOOS/GOARCH of the machine that saved it.
	AnnotationPlatform = "dev.tekton-cache.platform"
	// AnnotationFolders holds the folders the entry holds (store.Ref.Folders),
	// as a JSON list of strings.
	AnnotationFolders = "dev.tekton-cache.folders"
	// AnnotationInputs holds what the key was computed from
	// (store.Ref.Inputs), as JSON.
	AnnotationInputs = "dev.tekton-cache.inputs"
	// AnnotationCreated holds when the entry was saved (RFC 3339, UTC,
	// nanoseconds): the newest entry wins a restore key.
	AnnotationCreated = "org.opencontainers.image.created"
)

// maxManifestSize bounds what GetRef reads (a pack is ~200 bytes of manifest).
const maxManifestSize = 4 << 20

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifest is an OCI image manifest, with the fields of an image index and
// of a Docker schema 1 manifest that describeForeign looks at.
type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *descriptor       `json:"config,omitempty"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`

	Manifests []descriptor    `json:"manifests,omitempty"` // image index
	FSLayers  json.RawMessage `json:"fsLayers,omitempty"`  // schema 1
}

// encodeManifest returns the manifest that publishes ref.
func encodeManifest(ref *store.Ref) ([]byte, error) {
	m := manifest{
		SchemaVersion: 2,
		MediaType:     ManifestMediaType,
		ArtifactType:  format.ArtifactType,
		Config: &descriptor{
			MediaType: format.IndexMediaType,
			Digest:    ref.Index.Digest.String(),
			Size:      ref.Index.Size,
		},
		Layers: make([]descriptor, 0, len(ref.Packs)),
		Annotations: map[string]string{
			AnnotationKey:     ref.Key,
			AnnotationFormat:  strconv.Itoa(ref.Format),
			AnnotationCreated: ref.Created.UTC().Format(time.RFC3339Nano),
		},
	}
	if ref.Tool != "" {
		m.Annotations[AnnotationTool] = ref.Tool
	}
	if ref.Platform != "" {
		m.Annotations[AnnotationPlatform] = ref.Platform
	}
	if len(ref.Folders) > 0 {
		folders, err := json.Marshal(ref.Folders)
		if err != nil {
			return nil, err
		}
		m.Annotations[AnnotationFolders] = string(folders)
	}
	if ref.Inputs != nil {
		inputs, err := json.Marshal(ref.Inputs)
		if err != nil {
			return nil, err
		}
		m.Annotations[AnnotationInputs] = string(inputs)
	}
	for _, p := range ref.Packs {
		m.Layers = append(m.Layers, descriptor{MediaType: format.PackMediaType, Digest: p.Digest.String(), Size: p.Size})
	}
	return json.Marshal(m)
}

// decodeManifest reads the manifest tagged key (served as contentType) back
// into a ref. where names the tag in messages. A manifest that is not a
// tekton-cache entry gives an error wrapping ErrForeignEntry and
// store.ErrNotFound.
func decodeManifest(where, key, contentType string, raw []byte) (*store.Ref, error) {
	if len(raw) > maxManifestSize {
		return nil, foreign(where, fmt.Sprintf("a manifest of %d bytes", len(raw)), false)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, foreign(where, fmt.Sprintf("an unreadable manifest (%s)", storeerr.Cut(storeerr.OneLine(err.Error()), 100)), false)
	}
	mt := m.MediaType
	if mt == "" {
		mt = contentType
	}
	if m.ArtifactType != format.ArtifactType || mt != ManifestMediaType || m.Config == nil {
		what, refTool := describeForeign(mt, &m)
		return nil, foreign(where, what, refTool)
	}
	bad := func(msg string, args ...any) error {
		return store.DamagedRef(fmt.Errorf("%s is a damaged tekton-cache entry: %s", where, fmt.Sprintf(msg, args...)))
	}
	a := m.Annotations
	if a[AnnotationKey] != key {
		return nil, bad("it holds key %q: the store is inconsistent", a[AnnotationKey])
	}
	version, err := strconv.Atoi(a[AnnotationFormat])
	if err != nil {
		return nil, bad("annotation %s is %q, not a number", AnnotationFormat, a[AnnotationFormat])
	}
	created, err := time.Parse(time.RFC3339Nano, a[AnnotationCreated])
	if err != nil {
		return nil, bad("annotation %s is %q, not an RFC 3339 time", AnnotationCreated, a[AnnotationCreated])
	}
	ref := &store.Ref{
		Format:   version,
		Key:      key,
		Index:    format.Descriptor{Digest: digest.Digest(m.Config.Digest), Size: m.Config.Size},
		Packs:    make([]format.Descriptor, 0, len(m.Layers)),
		Created:  created.UTC(),
		Tool:     a[AnnotationTool],
		Platform: a[AnnotationPlatform],
	}
	if f, ok := a[AnnotationFolders]; ok {
		if err := json.Unmarshal([]byte(f), &ref.Folders); err != nil {
			return nil, bad("annotation %s is %q, not a JSON list of folders", AnnotationFolders, f)
		}
	}
	if in, ok := a[AnnotationInputs]; ok {
		// Only diagnoses read it: an unreadable record is left out, the
		// entry stays usable.
		var inputs store.KeyInputs
		if json.Unmarshal([]byte(in), &inputs) == nil {
			ref.Inputs = &inputs
		}
	}
	for _, l := range m.Layers {
		if l.MediaType != format.PackMediaType {
			return nil, bad("layer %s has media type %q, not %s", l.Digest, l.MediaType, format.PackMediaType)
		}
		ref.Packs = append(ref.Packs, format.Descriptor{Digest: digest.Digest(l.Digest), Size: l.Size})
	}
	if err := ref.Validate(); err != nil {
		return nil, bad("%s", err)
	}
	return ref, nil
}

// foreign is the error of a tag that holds something else than an entry.
func foreign(where, what string, refTool bool) error {
	hint := "it was pushed by another tool; use another key or repository, or save a new entry over it"
	if refTool {
		hint = "it was pushed by openshift-pipelines/tekton-caches or another tool; save a new entry with this tool"
	}
	return storeerr.New(fmt.Sprintf("%s is %s, not a tekton-cache entry: %s", where, what, hint), ErrForeignEntry, store.ErrNotFound)
}

// describeForeign says what a manifest that is not an entry is, and whether
// it looks like the reference tool's (a container image of tar layers).
func describeForeign(mediaType string, m *manifest) (what string, refTool bool) {
	switch {
	case mediaType == "application/vnd.oci.image.index.v1+json" || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json" || len(m.Manifests) > 0:
		return fmt.Sprintf("an image index (%s)", plural(len(m.Manifests), "manifest")), false
	case strings.HasPrefix(mediaType, "application/vnd.docker.distribution.manifest.v1") || len(m.FSLayers) > 0:
		return "a Docker schema 1 image", false
	case mediaType != ManifestMediaType && mediaType != "application/vnd.docker.distribution.manifest.v2+json":
		return fmt.Sprintf("a manifest of type %q", mediaType), false
	case m.ArtifactType != "":
		return fmt.Sprintf("an OCI artifact of type %q (%s)", m.ArtifactType, plural(len(m.Layers), "layer")), false
	case m.Config != nil && m.Config.MediaType != "application/vnd.oci.image.config.v1+json" && m.Config.MediaType != "application/vnd.docker.container.image.v1+json":
		return fmt.Sprintf("an OCI artifact with config type %q (%s)", m.Config.MediaType, plural(len(m.Layers), "layer")), false
	}
	kinds := map[string]bool{}
	for _, l := range m.Layers {
		kinds[layerCompression(l.MediaType)] = true
	}
	var ks []string
	for _, k := range []string{"gzip", "zstd", "uncompressed", "non-layer"} {
		if kinds[k] {
			ks = append(ks, k)
		}
	}
	desc := plural(len(m.Layers), "layer")
	if len(ks) > 0 {
		desc += ", " + strings.Join(ks, "+")
	}
	return fmt.Sprintf("a plain container image (%s)", desc), true
}

func layerCompression(mt string) string {
	switch {
	case strings.HasSuffix(mt, "+gzip") || strings.HasSuffix(mt, ".tar.gzip"):
		return "gzip"
	case strings.HasSuffix(mt, "+zstd") || strings.HasSuffix(mt, ".tar.zstd"):
		return "zstd"
	case strings.HasSuffix(mt, ".tar"):
		return "uncompressed"
	}
	return "non-layer"
}

func plural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return fmt.Sprintf("%d %ss", n, s)
}
