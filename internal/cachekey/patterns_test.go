package cachekey

import (
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func files(r *Result) []string {
	var out []string
	for _, f := range r.Files {
		out = append(out, f.Path)
	}
	return out
}

// TestReferencePatterns are the forms of openshift-pipelines/tekton-caches'
// examples (review D2): patterns matched against paths that start with the
// working dir, "**go.mod" at any depth, and '!' exclusions that exclude.
func TestReferencePatterns(t *testing.T) {
	wd := filepath.Join(t.TempDir(), "workspace", "source")
	write(t, wd, "package.json", `{"name":"x"}`)
	write(t, wd, "sub/package.json", `{"name":"y"}`)
	write(t, wd, "go.mod", "module x\n")
	write(t, wd, "go.sum", "dep v1\n")
	write(t, wd, "tools/go.mod", "module tools\n")
	write(t, wd, "tools/go.sum", "tool v1\n")
	write(t, wd, "vendor/go.sum", "vendored\n")
	for _, tc := range []struct {
		patterns []string
		want     []string
	}{
		// The Node example: the path as walked from the working dir.
		{[]string{"**/workspace/source/package.json"}, []string{"package.json"}},
		// The Go example: ** crosses directories, as in patternmatcher.
		{[]string{"**go.mod", "**go.sum"}, []string{"go.mod", "go.sum", "tools/go.mod", "tools/go.sum", "vendor/go.sum"}},
		// Our own dialect still works.
		{[]string{"**/go.sum"}, []string{"go.sum", "tools/go.sum", "vendor/go.sum"}},
		// Exclusions, in order, in either dialect; a directory excludes what is under it.
		{[]string{"**/go.sum", "!vendor/**"}, []string{"go.sum", "tools/go.sum"}},
		{[]string{"**/go.sum", "!**/vendor"}, []string{"go.sum", "tools/go.sum"}},
		{[]string{"**/go.sum", "!**/*.sum", "go.sum"}, []string{"go.sum"}},
		// An absolute path, as the reference's walk sees it.
		{[]string{filepath.Join(wd, "go.mod")}, []string{"go.mod"}},
	} {
		r, err := Compute(Options{WorkDir: wd, Patterns: tc.patterns})
		if err != nil {
			t.Errorf("%q: %v", tc.patterns, err)
			continue
		}
		if got := files(r); !slices.Equal(got, tc.want) {
			t.Errorf("%q matched %q, want %q", tc.patterns, got, tc.want)
		}
	}
	// A working dir given relative: the walk's paths start with it as written.
	t.Chdir(filepath.Dir(wd))
	r, err := Compute(Options{WorkDir: "source", Patterns: []string{"source/go.sum"}})
	if err != nil || !slices.Equal(files(r), []string{"go.sum"}) {
		t.Errorf("relative working dir: %v %v", r, err)
	}
}

func TestBadPatternsAreRefused(t *testing.T) {
	wd := t.TempDir()
	write(t, wd, "go.sum", "x\n")
	for _, tc := range []struct {
		patterns []string
		want     string
	}{
		{[]string{"!go.sum"}, "only exclude"},
		{[]string{"!"}, "empty"},
		{[]string{"go[.sum"}, "invalid pattern"},
		{[]string{"**/workspace/source/package.json"}, "paths that start with the working dir as given"},
	} {
		_, err := Compute(Options{WorkDir: wd, Patterns: tc.patterns})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.patterns, err, tc.want)
		}
	}
}

func TestExpandAll(t *testing.T) {
	got, err := ExpandAll("go-{{os}}-{{ arch }}-{{HASH}}", "abc")
	if want := "go-" + runtime.GOOS + "-" + runtime.GOARCH + "-abc"; err != nil || got != want {
		t.Errorf("ExpandAll = %q, %v; want %q", got, err, want)
	}
	if got, err := ExpandAll("oci://r/repo:go-{{hash}}", "abc"); err != nil || got != "oci://r/repo:go-abc" {
		t.Errorf("ExpandAll of a store URI = %q, %v", got, err)
	}
	if !HasHash("x-{{ Hash }}") || HasHash("x-{{os}}") {
		t.Error("HasHash")
	}
	if _, err := ExpandAll("go-{{branch}}", "abc"); err == nil || !strings.Contains(err.Error(), "{{branch}}") {
		t.Errorf("unknown placeholder: %v", err)
	}
}
