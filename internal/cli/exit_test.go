package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// TestFlagErrorsAreUsageErrors checks that cobra's flag errors reach
// Execute as usageError through the root's flag-error hook, whatever
// their text says.
func TestFlagErrorsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"fetch", "--bogus"},
		{"fetch", "-x"},
		{"upload", "--folder"},
		{"fetch", "--timeout", "soon"},
		{"list", "--insecure=maybe"},
		{"key", "--pattern"},
	} {
		root := NewRoot()
		root.SetArgs(args)
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		err := root.ExecuteContext(context.Background())
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("cache %v: %v (%T), want a usageError", args, err, err)
		}
	}
}

func TestUnknownCommandIsExit2(t *testing.T) {
	r := cache(t, "fecth", "--source", "file:///tmp/x/k")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "fecth"`) {
		t.Errorf("unknown command: %+v, want exit 2", r)
	}
}

// TestLowerLayersSentinelsInFlagTerms checks that the engine, cachekey
// and store say what is wrong without naming a flag, and that the CLI
// adds the flag, once.
func TestLowerLayersSentinelsInFlagTerms(t *testing.T) {
	_, saveErr := engine.Save(context.Background(), nil, engine.SaveOptions{Key: "k"})
	_, restoreErr := engine.Restore(context.Background(), nil, engine.RestoreOptions{Key: "k"})
	_, patternErr := cachekey.Compute(cachekey.Options{WorkDir: t.TempDir()})
	_, dirErr := cachekey.Compute(cachekey.Options{WorkDir: "/nonexistent/dir"})
	_, urlErr := store.ParseURL("")
	_, emptyErr := engine.Save(context.Background(), nil, engine.SaveOptions{Key: "k", Folders: []string{""}})
	for _, tc := range []struct {
		err      error
		sentinel error
		want     string
	}{
		{saveErr, engine.ErrNoFolders, "no folder to save: pass --folder"},
		{restoreErr, engine.ErrNoFolders, "no folder to restore into: pass --folder"},
		{patternErr, cachekey.ErrNoPattern, "no known lock file in "},
		{patternErr, cachekey.ErrNoPattern, "Cargo.lock): pass --pattern"},
		{dirErr, cachekey.ErrNotDir, "/nonexistent/dir is not a directory: set --workingdir"},
		{urlErr, store.ErrNoURL, "no store URL: pass --source/--target (or --store)"},
		{emptyErr, engine.ErrEmptyFolder, "folder 1 is empty (an unset variable?): pass a directory to --folder"},
	} {
		if !errors.Is(tc.err, tc.sentinel) {
			t.Errorf("%v: not %v", tc.err, tc.sentinel)
			continue
		}
		if strings.Contains(tc.err.Error(), "--") {
			t.Errorf("%q: a lower layer names a flag", tc.err)
		}
		worded := inFlagTerms(fmt.Errorf("outer: %w", tc.err))
		if !strings.Contains(worded.Error(), tc.want) || !isConfigError(worded) {
			t.Errorf("inFlagTerms(%q) = %q, want it to say %q (and be a misconfiguration)", tc.err, worded, tc.want)
		}
		if twice := inFlagTerms(usageError{worded}); twice.Error() != worded.Error() {
			t.Errorf("inFlagTerms twice: %q", twice)
		}
	}
}
