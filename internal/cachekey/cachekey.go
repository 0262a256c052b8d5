// Package cachekey computes cache keys from lock files: glob patterns,
// relative to a working directory (or, in the reference tool's dialect, to
// the path a walk from it gives; see pattern), select files; the hash covers each file's
// relative path and content, in sorted order. Files inside the cached
// folders and inside .git are never matched, so a cache restored into the
// workspace cannot change the key it was restored under.
package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// HashPlaceholder is replaced by the computed hash in key templates and URIs.
const HashPlaceholder = "{{hash}}"

// hashVersion starts every hashed stream, so that a change in how keys are
// computed changes every key instead of colliding with old ones.
const hashVersion = "tekton-cache key v1\n"

// Options say which files make the key.
type Options struct {
	// WorkDir is the directory patterns are relative to. Default ".".
	WorkDir string
	// Patterns are globs ("**/go.sum"; see pattern for both dialects),
	// applied in order, '!' excluding. Empty: detect the language from
	// WorkDir (see Detect).
	Patterns []string
	// Exclude lists directories whose files never match: the cached
	// folders. Relative paths are relative to the current directory, as
	// --folder is.
	Exclude []string
}

// File is one matched file.
type File struct {
	// Path is relative to WorkDir, with '/' separators.
	Path string
	// Digest is the hex sha256 of the file's content.
	Digest string
}

// Result is a computed hash and how it was made.
type Result struct {
	WorkDir  string
	Patterns []string
	// Detected names the ecosystems found when no pattern was given.
	Detected []string
	Files    []File
	// Hash is the hex sha256 over every file's path and digest.
	Hash string
}

// Errors of a configuration that cannot make a key, to check with
// errors.Is. They speak of options, not flags: the CLI says which flag to
// change.
var (
	// ErrNoMatch is wrapped by the error of patterns that match no file.
	ErrNoMatch = errors.New("no file matches")
	// ErrNoPattern is wrapped by the error of no pattern given and no
	// known lock file to detect in the working dir.
	ErrNoPattern = errors.New("no pattern given and no known lock file")
	// ErrNotDir is wrapped by the error of a working dir that is not a
	// directory.
	ErrNotDir = errors.New("not a directory")
)

// Compute finds the files and hashes them.
func Compute(o Options) (*Result, error) {
	wd := o.WorkDir
	if wd == "" {
		wd = "."
	}
	absWD, err := filepath.Abs(wd)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(absWD); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("working dir %s is %w", absWD, ErrNotDir)
	}
	res := &Result{WorkDir: absWD, Patterns: o.Patterns}
	if len(res.Patterns) == 0 {
		res.Detected, res.Patterns = Detect(absWD)
		if len(res.Patterns) == 0 {
			return nil, fmt.Errorf("%w in %s (%s)", ErrNoPattern, absWD, strings.Join(lockFiles(), ", "))
		}
	}
	ps, err := compilePatterns(res.Patterns)
	if err != nil {
		return nil, err
	}
	excl, err := excludedDirs(absWD, o.Exclude)
	if err != nil {
		return nil, err
	}
	paths, err := match(absWD, wd, ps, excl)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w pattern(s) %s in %s (patterns match paths relative to it, such as go.sum or sub/go.sum, or paths that start with the working dir as given, such as %s; files in .git and in the cached folders never match)", ErrNoMatch, strings.Join(quoteAll(res.Patterns), ", "), absWD, filepath.ToSlash(filepath.Join(wd, "go.sum")))
	}
	total := sha256.New()
	io.WriteString(total, hashVersion) //nolint:errcheck // hashing never fails
	for _, p := range paths {
		d, err := fileDigest(filepath.Join(absWD, filepath.FromSlash(p)))
		if err != nil {
			return nil, fmt.Errorf("hashing %s: %w", p, err)
		}
		res.Files = append(res.Files, File{Path: p, Digest: d})
		fmt.Fprintf(total, "%s\x00%s\n", p, d)
	}
	res.Hash = hex.EncodeToString(total.Sum(nil))
	return res, nil
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// excludedDirs returns the cached folders that lie inside wd, relative to
// wd with '/' separators.
func excludedDirs(wd string, folders []string) ([]string, error) {
	var out []string
	for _, f := range folders {
		if f == "" {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, err
		}
		// Resolve symlinks where possible so that a link to the cache is
		// excluded too.
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			abs = r
		}
		wdr := wd
		if r, err := filepath.EvalSymlinks(wd); err == nil {
			wdr = r
		}
		rel, err := filepath.Rel(wdr, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			continue // outside the working dir: cannot be matched anyway
		}
		if rel == "." {
			return nil, fmt.Errorf("cached folder %s is the working dir itself: the key files would be cached too; cache a subdirectory", f)
		}
		out = append(out, filepath.ToSlash(rel))
	}
	return out, nil
}

func isExcluded(rel string, excl []string) bool {
	for _, e := range excl {
		if rel == e || strings.HasPrefix(rel, e+"/") {
			return true
		}
	}
	return false
}

func hasMeta(p string) bool { return strings.ContainsAny(p, "*?[{\\") }

// match returns the sorted, de-duplicated relative paths of the regular files
// under absWD that the patterns select; given is the working dir as the user
// wrote it (the reference dialect matches paths that start with it).
func match(absWD, given string, ps []pattern, excl []string) ([]string, error) {
	set := map[string]bool{}
	walk := false
	for i := range ps {
		p := &ps[i]
		if p.exclude || hasMeta(p.glob) || filepath.IsAbs(p.glob) {
			walk = true
		}
	}
	if !walk {
		// Literal relative paths only: no walk needed.
		for i := range ps {
			rel := filepath.ToSlash(filepath.Clean(ps[i].glob))
			// The reference dialect names the file by its walked path.
			if g := filepath.ToSlash(filepath.Clean(given)) + "/"; g != "./" && strings.HasPrefix(rel, g) {
				if _, err := os.Stat(filepath.Join(absWD, filepath.FromSlash(rel))); err != nil {
					rel = strings.TrimPrefix(rel, g)
				}
			}
			if rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, fmt.Errorf("pattern %q points outside the working dir %s", ps[i].raw, absWD)
			}
			if isExcluded(rel, excl) || rel == ".git" || strings.HasPrefix(rel, ".git/") {
				continue
			}
			if fi, err := os.Stat(filepath.Join(absWD, filepath.FromSlash(rel))); err == nil && fi.Mode().IsRegular() {
				set[rel] = true
			}
		}
	} else {
		err := filepath.WalkDir(absWD, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == absWD {
					return err
				}
				return nil // unreadable subtree: it cannot hold a lock file we can hash
			}
			rel, _ := filepath.Rel(absWD, p)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if rel != "." && (d.Name() == ".git" || isExcluded(rel, excl)) {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			if !selected(ps, rel, filepath.ToSlash(filepath.Join(given, rel))) {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				// Follow links to files (a lock file linked in), not to dirs.
				if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
					return nil
				}
			}
			set[rel] = true
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walking %s: %w", absWD, err)
		}
	}
	paths := make([]string, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return slices.Compact(paths), nil
}
