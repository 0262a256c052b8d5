package oci

import (
	"fmt"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// FuzzDecodeManifest: whatever a registry answers, decodeManifest returns a
// ref that validates and holds the key asked for, or an error; a ref it
// returns is published again as a manifest that decodes to the same ref.
func FuzzDecodeManifest(f *testing.F) {
	raw, err := encodeManifest(testRef())
	if err != nil {
		f.Fatal(err)
	}
	f.Add("go-abc", ManifestMediaType, raw)
	f.Add("other", ManifestMediaType, raw)
	f.Add("go-abc", "", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	f.Add("go-abc", "application/vnd.docker.distribution.manifest.v1+json", []byte(`{"schemaVersion":1,"fsLayers":[]}`))
	f.Fuzz(func(t *testing.T, key, contentType string, data []byte) {
		ref, err := decodeManifest("fuzz:"+key, key, contentType, data)
		if err != nil {
			return
		}
		if ref.Key != key || ref.Validate() != nil {
			t.Fatalf("decoded a ref for %q that does not validate: %+v: %v", key, ref, ref.Validate())
		}
		again, err := encodeManifest(ref)
		if err != nil {
			t.Fatalf("a decoded ref does not encode: %v", err)
		}
		ref2, err := decodeManifest("fuzz:"+key, key, ManifestMediaType, again)
		if err != nil {
			t.Fatalf("a decoded ref, published again, does not decode: %v", err)
		}
		if a, b := fmtRef(ref), fmtRef(ref2); a != b {
			t.Fatalf("round trip changed the ref:\n%s\n%s", a, b)
		}
	})
}

// fmtRef prints a ref with its time as an instant, so that two refs of the
// same content print the same.
func fmtRef(r *store.Ref) string {
	c := *r
	c.Created = c.Created.UTC()
	return fmt.Sprintf("%+v %+v", c, c.Inputs)
}
