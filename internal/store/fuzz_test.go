package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// FuzzDecodeRef: any bytes under any key either decode to a ref that
// validates and holds that key, or fail; what decodes encodes back to a ref
// that decodes the same.
func FuzzDecodeRef(f *testing.F) {
	d := digest.FromBytes([]byte("x"))
	good, _ := json.Marshal(&Ref{Format: format.Version, Key: "go-abc", Index: format.Descriptor{Digest: d, Size: 1},
		Packs: []format.Descriptor{{Digest: d, Size: 1}}, Created: time.Unix(1, 0).UTC(), Folders: []string{"a"}})
	f.Add("go-abc", good)
	f.Add("other", good)
	f.Add("go-abc", []byte(`{"format":2,"key":"go-abc"}`))
	f.Add("go-abc", []byte(`{"format":1,"key":"go-abc","index":{"digest":"sha256:00","size":-1}}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		r, err := DecodeRef(key, data)
		if err != nil {
			return
		}
		if r.Key != key || r.Validate() != nil {
			t.Fatalf("DecodeRef(%q) returned ref %q that does not validate: %v", key, r.Key, r.Validate())
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := DecodeRef(key, again)
		if err != nil {
			t.Fatalf("a decoded ref does not decode once encoded again: %v", err)
		}
		if third, _ := json.Marshal(r2); string(third) != string(again) {
			t.Fatalf("encode/decode is not stable:\n%s\n%s", again, third)
		}
	})
}

// FuzzKeys: ValidateKey, MapKey and MapPrefix agree: a valid key maps to
// itself, a mapped key is valid and as long as the key, and a prefix maps
// to a prefix of the mapped key.
func FuzzKeys(f *testing.F) {
	for _, k := range []string{"go-abc", "cache-go:abc", "feature/x", ".hidden", "-x", "a b", strings.Repeat("a", 129), "pkg@1.2+b="} {
		f.Add(k, 3)
	}
	f.Fuzz(func(t *testing.T, key string, cut int) {
		mapped, changed, err := MapKey(key)
		valid := ValidateKey(key) == nil
		switch {
		case valid && (err != nil || changed || mapped != key):
			t.Fatalf("valid key %q mapped to %q (changed %v, %v)", key, mapped, changed, err)
		case err != nil:
			return
		case ValidateKey(mapped) != nil || len(mapped) != len(key):
			t.Fatalf("%q mapped to %q, which is invalid or of another length", key, mapped)
		}
		if cut < 0 || cut > len(key) {
			return
		}
		p, _, perr := MapPrefix(key[:cut])
		if perr == nil && !strings.HasPrefix(mapped, p) {
			t.Fatalf("prefix %q of %q mapped to %q, not a prefix of %q", key[:cut], key, p, mapped)
		}
	})
}

// FuzzSplitKey: a URI that splits gives a key and a store URL that put back
// together are the URI (without a query string); never a panic.
func FuzzSplitKey(f *testing.F) {
	for _, u := range []string{"oci://registry:5000/repo:go-abc", "s3://bucket/prefix/key?region=x", "file:///var/cache/k", "oci://r/x", "gs://b/", "file://"} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		st, key, err := SplitKey(raw)
		if err != nil || strings.Contains(raw, "?") {
			return
		}
		sep := "/"
		if len(raw) >= 4 && strings.EqualFold(raw[:4], "oci:") {
			sep = ":"
		}
		if key == "" || st+sep+key != raw {
			t.Fatalf("SplitKey(%q) = %q, %q: they do not make the URI again", raw, st, key)
		}
	})
}
