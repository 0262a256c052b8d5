package gha

import (
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// TestNameKeys: every backing key is valid in every store, a key's
// prefixes list it, different keys never share one, and the status page's
// name gives the key back (cut when long).
func TestNameKeys(t *testing.T) {
	long := strings.Repeat("node-cache-Linux-x64-npm-", 20)
	keys := []string{"a", "buildkit-blob-1-sha256:0123abcd", "index-buildkit-1-0badf00d#12", "key with spaces/and.dots_", "ümlaut", long, long + "x", long + "y"}
	scope := strings.Repeat("s", 24) // the longest scope
	seen := map[string]string{}
	for _, k := range keys {
		bk := nameKey(entryNS, scope, "v", k)
		if err := store.ValidateKey(bk); err != nil {
			t.Errorf("%q: %v", k, err)
		}
		if other, ok := seen[bk]; ok {
			t.Errorf("%q and %q share %s", k, other, bk)
		}
		seen[bk] = k
		for i := 1; i <= len(k); i++ {
			if p := namePrefix(entryNS, scope, "v", k[:i]); !strings.HasPrefix(bk, p) {
				t.Fatalf("prefix %q of %q: %s does not start %s", k[:i], k, p, bk)
			}
		}
		if strings.HasPrefix(bk, namePrefix(entryNS, scope, "w", k)) {
			t.Errorf("%q: another version lists it", k)
		}
		sc, name, ok := NameRef(bk)
		if !ok || sc != scope || !strings.HasPrefix("gha "+k, strings.TrimSuffix(name, "...")) {
			t.Errorf("NameRef(%s) = %s %q %v, want %s and the start of %q", bk, sc, name, ok, scope, k)
		}
		if Internal(bk) || !IsEntry(bk) {
			t.Errorf("%s is not an entry's", bk)
		}
	}
	for _, ns := range []string{reserveNS, uploadNS, partNS} {
		if !Internal(ns + "x") {
			t.Errorf("%s is not internal", ns)
		}
	}
}
