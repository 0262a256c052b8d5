package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
)

// TestExplain runs cache explain and a missing fetch through the CLI
// against a file:// store and a registry: an empty store says so, a
// lock-file change names the file (and a new one added), an entry saved on
// another platform says so.
func TestExplain(t *testing.T) {
	stores := map[string]string{"file": "file://" + t.TempDir()}
	if !testing.Short() {
		stores["oci"] = "oci://" + testserver.Registry(t, "", "") + "/team/cache"
	}
	for name, storeURL := range stores {
		t.Run(name, func(t *testing.T) {
			wd, folder := workspace(t)
			src := storeURL + "/go-{{hash}}"
			if name == "oci" {
				src = storeURL + ":go-{{hash}}"
			}
			flags := func(verb string, extra ...string) []string {
				uri := "--source"
				if verb == "upload" {
					uri = "--target"
				}
				return append([]string{verb, uri, src, "--workingdir", wd, "--folder", folder, "--pattern", "**/go.sum", "--pattern", "**/go.mod"}, extra...)
			}
			r := cache(t, flags("explain")...)
			if r.code != 0 || !strings.Contains(r.stdout, "the store is empty") {
				t.Fatalf("explain on an empty store: %+v", r)
			}
			if r := cache(t, flags("fetch")...); r.code != 0 || !strings.Contains(r.stderr, "is empty") {
				t.Fatalf("fetch on an empty store does not say it is empty: %+v", r)
			}
			if r := cache(t, flags("upload")...); r.code != 0 {
				t.Fatalf("upload: %+v", r)
			}
			os.WriteFile(filepath.Join(wd, "go.sum"), []byte("dep v2\n"), 0o644)
			os.MkdirAll(filepath.Join(wd, "docs"), 0o755)
			os.WriteFile(filepath.Join(wd, "docs", "go.mod"), []byte("module example.com/docs\n"), 0o644)
			r = cache(t, flags("explain")...)
			if r.code != 0 || !strings.Contains(r.stdout, "changed  go.sum") || !strings.Contains(r.stdout, "added    docs/go.mod") ||
				strings.Contains(r.stdout, "changed  go.mod") {
				t.Fatalf("explain after a go.sum change: %+v", r)
			}
			r = cache(t, flags("fetch")...)
			if r.code != 0 || !strings.Contains(r.stderr, "nearest entry go-") || !strings.Contains(r.stderr, "go.sum changed, docs/go.mod added") {
				t.Fatalf("a fetch that misses prints no diagnosis: %+v", r)
			}

			// The entry, as if saved on another platform.
			ctx := context.Background()
			st, err := all.Mux().Open(ctx, storeURL, store.Options{Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			keys, err := st.ListRefs(ctx, "go-")
			if err != nil || len(keys) != 1 {
				t.Fatalf("refs: %v %v", keys, err)
			}
			ref, err := st.GetRef(ctx, keys[0])
			if err != nil || ref.Inputs == nil || len(ref.Inputs.Files) != 2 || ref.Inputs.Template != "go-{{hash}}" {
				t.Fatalf("the ref records no key inputs: %+v %v", ref, err)
			}
			other := "linux/arm64"
			if engine.Platform() == other {
				other = "linux/amd64"
			}
			ref.Platform = other
			if err := st.PutRef(ctx, ref); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(wd, "go.sum"), []byte("dep v1\n"), 0o644)
			os.Remove(filepath.Join(wd, "docs", "go.mod"))
			r = cache(t, flags("explain")...)
			if r.code != 0 || !strings.Contains(r.stdout, "platform "+other+", this is "+engine.Platform()) || !strings.Contains(r.stdout, "an entry exists under the key itself") {
				t.Fatalf("explain after a platform change: %+v", r)
			}
			if r := cache(t, flags("explain", "--cross-platform")...); r.code != 0 || strings.Contains(r.stdout, "platform "+other) {
				t.Fatalf("explain --cross-platform still names the platform: %+v", r)
			}
		})
	}
}

// TestLintCommand: exit 1 on an error-level finding, 0 on warnings only or
// none, 2 on a bad path; --help shows an example.
func TestLintCommand(t *testing.T) {
	if r := cache(t, "lint", "../../test/lint/bad/unknown-param.yaml"); r.code != 1 || !strings.Contains(r.stdout, ":16:17: error unknown-param:") {
		t.Fatalf("lint of an error: %+v", r)
	}
	if r := cache(t, "lint", "../../test/lint/bad/patterns.yaml"); r.code != 0 || !strings.Contains(r.stdout, "warning pattern-dialect") {
		t.Fatalf("lint of warnings: %+v", r)
	}
	if r := cache(t, "lint", "../../tekton", "../../examples"); r.code != 0 || r.stdout != "" {
		t.Fatalf("lint of our own YAML: %+v", r)
	}
	if r := cache(t, "lint", "no-such-dir"); r.code != 2 {
		t.Fatalf("lint of a missing path: %+v", r)
	}
	if r := cache(t, "lint", "--output", "sarif", "../../test/lint/bad/missing-param.yaml"); r.code != 1 || !strings.Contains(r.stdout, `"version": "2.1.0"`) {
		t.Fatalf("lint --output sarif: %+v", r)
	}
	if r := cache(t, "lint", "--help"); r.code != 0 || !strings.Contains(r.stdout, "cache lint .tekton/") {
		t.Fatalf("lint --help shows no example: %+v", r)
	}
}
