package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// usageError marks an error of how the command was called (exit 2): a
// flag cobra could not parse (the root's flag-error hook), an unknown
// command, a bad CACHE_* value, a flag value the command refuses.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// isConfigError tells whether err comes from how the command was set up
// (exit 2), not from the store being unreachable or slow (a warning).
func isConfigError(err error) bool {
	var u usageError
	return errors.As(err, &u) || errors.Is(err, store.ErrBadURL) || errors.Is(err, store.ErrInvalidKey) ||
		errors.Is(err, engine.ErrConfig) || errors.Is(err, cachekey.ErrNoMatch) ||
		errors.Is(err, cachekey.ErrNoPattern) || errors.Is(err, cachekey.ErrNotDir)
}

// flagHints word the lower layers' sentinels in terms of flags: the lower
// layers know options, only the command line knows its flags.
var flagHints = []struct {
	err  error
	hint string
}{
	{engine.ErrNoFolders, "pass --folder"},
	{engine.ErrEmptyFolder, "pass a directory to --folder"},
	{cachekey.ErrNoPattern, "pass --pattern"},
	{cachekey.ErrNotDir, "set --workingdir"},
	{cachekey.ErrNoMatch, "fix --pattern or --workingdir"},
	{store.ErrNoURL, "pass --source/--target (or --store), e.g. file:///var/cache/tekton or oci://registry/repo"},
}

// hinted is an error with the flag to change appended.
type hinted struct {
	error
	hint string
}

func (h hinted) Error() string { return h.error.Error() + ": " + h.hint }
func (h hinted) Unwrap() error { return h.error }

// inFlagTerms appends to err the flag that fixes it, when a lower layer's
// sentinel says which, once.
func inFlagTerms(err error) error {
	var h hinted
	if err == nil || errors.As(err, &h) {
		return err
	}
	for _, fh := range flagHints {
		if errors.Is(err, fh.err) {
			return hinted{err, fh.hint}
		}
	}
	return err
}

// oneLine folds a multi-line error (SDKs like them) into one line.
func oneLine(s string) string {
	return storeerr.OneLine(s)
}

// storeName is the store as results and logs show it: no password, no
// secret query value, no added escaping.
func storeName(storeURL string) string { return store.Redact(storeURL) }

// withStore is err on one line, naming the store unless it already does.
func withStore(err error, storeURL string) error {
	msg := oneLine(err.Error())
	name := storeName(storeURL)
	if strings.Contains(msg, strings.SplitN(name, "?", 2)[0]) {
		return err
	}
	return fmt.Errorf("%s: %w", name, err)
}
