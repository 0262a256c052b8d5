// Package store defines where cache entries live: the Store interface that
// every backend implements, the errors they share, the ref record, and the
// object-store layout used by the file, memory and cloud backends.
//
// A Store holds two kinds of things (see docs/FORMAT.md):
//
//   - blobs: immutable byte strings named by their sha256 digest (packs and
//     indexes);
//   - refs: small mutable records that map a cache key to an entry (its
//     index and packs), published last so that a reader sees either the old
//     entry or the new one.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// ErrNotFound is wrapped by every error that means "no such blob or ref".
// Check it with errors.Is.
var ErrNotFound = errors.New("not found")

// ErrForeign is wrapped (together with ErrNotFound) by the error of GetRef
// when the key names something another tool wrote (an OCI image pushed by
// the reference tool, say): there is no entry of ours under it, and the
// message says what is there instead.
var ErrForeign = errors.New("not a tekton-cache entry")

// BlobInfo is what a store knows of a blob.
type BlobInfo struct {
	// Size is the blob's length in bytes.
	Size int64
	// Modified is when the blob was written, zero when the store cannot
	// tell (a registry cannot). A prune keeps blobs younger than its grace
	// period, which a save still running may not have named in a ref yet.
	Modified time.Time
}

// BlobStore is the blob half of a store: immutable byte strings named by
// their sha256 digest. A server or a protocol front end that stores opaque
// archives needs only this half.
//
// Implementations are safe for concurrent use. Every error names the store
// and what was asked, and never contains a secret.
type BlobStore interface {
	// StatBlob returns what the store knows of blob d. A missing blob gives
	// an error for which errors.Is(err, ErrNotFound) is true.
	StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error)

	// GetBlob opens blob d for reading. A missing blob gives ErrNotFound.
	// Callers verify what they read (digest.Verifier); a store may too.
	GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error)

	// PutBlob stores the size bytes of r as blob d. It is all-or-nothing:
	// the blob becomes readable only once all bytes arrived and matched d
	// and size; a failed, short, corrupt or cancelled put leaves nothing
	// readable. Putting a blob that already exists succeeds.
	PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error

	// String names the store for logs (a URL without credentials).
	String() string
}

// RefStore is the ref half of a store: small mutable records that map a
// cache key to an entry.
//
// Implementations are safe for concurrent use. Every error names the store
// and what was asked, and never contains a secret.
type RefStore interface {
	// GetRef returns the ref published under key. A missing key gives
	// ErrNotFound; an invalid key gives ErrInvalidKey.
	GetRef(ctx context.Context, key string) (*Ref, error)

	// PutRef publishes ref under ref.Key, replacing any previous ref of that
	// key in one atomic step. Callers put every blob the ref names first.
	PutRef(ctx context.Context, ref *Ref) error

	// ListRefs returns the keys that start with prefix, in any order.
	ListRefs(ctx context.Context, prefix string) ([]string, error)

	// String names the store for logs (a URL without credentials).
	String() string
}

// Store is a place that holds cache entries: blobs and the refs that name
// them. What some stores can do beyond it (delete, stage, list blobs, read
// from an offset, list refs with their times) are the optional interfaces
// Deleter, BlobStager, BlobLister, BlobRanger and RefLister, found with As
// through any wrapper.
type Store interface {
	BlobStore
	RefStore
}

// Deleter is implemented by stores that can remove refs and blobs. Removing
// what is missing is not an error.
type Deleter interface {
	DeleteRef(ctx context.Context, key string) error
	DeleteBlob(ctx context.Context, d digest.Digest) error
}

// BlobLister is implemented by stores that can list their blobs (object
// stores; a registry cannot), so that a prune can find the blobs no ref
// names.
type BlobLister interface {
	// ListBlobs returns every blob of the store, in any order.
	ListBlobs(ctx context.Context) ([]BlobMeta, error)
}

// BlobChecker is implemented by stores that say which of many blobs they
// lack in one round trip (an http:// store: POST /v1/blobs:missing),
// where any store can say it blob by blob with StatBlob. Its answer is
// untrusted like the rest: a blob it wrongly says is there makes the
// store refuse the ref that names it (or a restore miss), never wrong
// bytes.
type BlobChecker interface {
	// MissingBlobs returns the digests of ds the store does not hold.
	MissingBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error)
}

// MetaStore is implemented by stores that keep small named records of
// their own beside the entries (an object store's v1/meta/NAME), never
// listed as refs or blobs: what a prune remembers from one run to the next.
// A record is as untrusted as everything else in the store.
type MetaStore interface {
	// GetMeta returns the record name, or an error wrapping ErrNotFound.
	GetMeta(ctx context.Context, name string) ([]byte, error)
	// PutMeta writes the record name whole, replacing what was there.
	PutMeta(ctx context.Context, name string, data []byte) error
}

// MaxMetaSize bounds a record read by GetMeta.
const MaxMetaSize = 64 << 20

// ErrDamagedRef is wrapped by the error of GetRef for a ref that is ours
// but cannot be read as an entry (undecodable, or failing Ref.Validate): it
// will never restore, and no retry changes it.
var ErrDamagedRef = errors.New("damaged ref")

// RefLister is implemented by stores whose listing of refs tells, for
// free, when each ref was written (an object store's listing carries each
// object's modification time). Candidates reads refs in that order, newest
// first, and stops at the first usable one, instead of reading every ref
// of a prefix to learn its Created.
type RefLister interface {
	// ListRefInfo returns the keys that start with prefix, in any order,
	// each with when its ref was written (zero when the store cannot tell).
	ListRefInfo(ctx context.Context, prefix string) ([]RefInfo, error)
}

// RefInfo is one key of a RefLister's listing.
type RefInfo struct {
	Key string
	// Modified is when the store last wrote the ref, by the store's clock;
	// zero when it cannot tell. It is a hint for the order in which refs
	// are read, never a substitute for reading one: a ref's Created is the
	// time that ranks it.
	Modified time.Time
}

// BlobMeta is one blob of a listing.
type BlobMeta struct {
	Digest digest.Digest
	BlobInfo
}

// Unwrapper is implemented by every wrapper of a Store (retries, checks,
// test doubles): Unwrap returns the store it wraps, so that As finds an
// optional capability through it.
type Unwrapper interface {
	Unwrap() Store
}

// As returns the first of s, s.Unwrap(), s.Unwrap().Unwrap() ... that
// implements T (an optional capability such as Deleter or BlobStager).
//
// A wrapper that implements T itself (to check or retry the calls) counts
// only when what it wraps has T too: the capability is the backend's, and
// a wrapper never makes one appear. So As[Deleter] on a checked, retrying
// store answers whether its backend can delete, and the Deleter it returns
// is the outermost one, with the checks and retries of every layer.
func As[T any](s Store) (T, bool) {
	var zero T
	for s != nil {
		t, ok := s.(T)
		u, wraps := s.(Unwrapper)
		switch {
		case ok && !wraps:
			return t, true
		case ok:
			if _, inner := As[T](u.Unwrap()); inner {
				return t, true
			}
			return zero, false
		case !wraps:
			return zero, false
		}
		s = u.Unwrap()
	}
	return zero, false
}

// Ref is the record that maps a key to a cache entry.
type Ref struct {
	// Format is the entry format version (format.Version when written).
	Format int `json:"format"`
	// Key is the cache key the entry is published under.
	Key string `json:"key"`
	// Index is the entry's index blob.
	Index format.Descriptor `json:"index"`
	// Packs lists every pack blob the index points into, so that a store can
	// keep them alive (OCI layers, garbage collection) without reading the index.
	Packs []format.Descriptor `json:"packs"`
	// Created is when the entry was saved; the newest entry wins a restore key.
	Created time.Time `json:"created"`
	// Tool is the version of the program that saved the entry.
	Tool string `json:"tool,omitempty"`
	// Platform is GOOS/GOARCH of the machine that saved the entry.
	Platform string `json:"platform,omitempty"`
	// Folders are the folders the entry holds, in the order of the index's
	// roots, each as given relative to the working dir of the save (or
	// absolute when outside it). Empty in entries written before it existed.
	Folders []string `json:"folders,omitempty"`
	// Inputs are what the key was computed from, for `cache explain` and
	// the one-line diagnosis of a miss. Nil in entries written before it
	// existed, or saved under a key given whole.
	Inputs *KeyInputs `json:"inputs,omitempty"`
}

// KeyInputs record how an entry's key was made.
type KeyInputs struct {
	// Template is the key template ("go-{{hash}}").
	Template string `json:"template"`
	// Patterns are the patterns given (empty: detected from lock files).
	Patterns []string `json:"patterns,omitempty"`
	// Files are the matched files, relative to the working dir, with the
	// hex sha256 of each; at most MaxInputFiles.
	Files []InputFile `json:"files,omitempty"`
	// Truncated is set when more files matched than Files holds.
	Truncated bool `json:"truncated,omitempty"`
}

// InputFile is one file a key was computed from.
type InputFile struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
}

// MaxInputFiles bounds KeyInputs.Files, so that a ref stays small (an OCI
// manifest annotation holds it).
const MaxInputFiles = 500

// Blobs lists the blobs r names, each once: its index, then its packs.
func (r *Ref) Blobs() []format.Descriptor {
	ds := make([]format.Descriptor, 0, 1+len(r.Packs))
	seen := make(map[digest.Digest]bool, 1+len(r.Packs))
	for _, d := range append([]format.Descriptor{r.Index}, r.Packs...) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			ds = append(ds, d)
		}
	}
	return ds
}

// Validate checks that r is complete and well formed.
func (r *Ref) Validate() error {
	if err := format.Check(fmt.Sprintf("ref %q", r.Key), r.Format); err != nil {
		return err
	}
	if err := ValidateKey(r.Key); err != nil {
		return err
	}
	if err := r.Index.Digest.Validate(); err != nil {
		return fmt.Errorf("ref %q: index: %w", r.Key, err)
	}
	for _, p := range r.Packs {
		if err := p.Digest.Validate(); err != nil {
			return fmt.Errorf("ref %q: pack: %w", r.Key, err)
		}
	}
	return nil
}

// ErrInvalidKey is wrapped by the error of an invalid cache key.
var ErrInvalidKey = errors.New("invalid cache key")

// keyPattern is the OCI tag grammar, [A-Za-z0-9_][A-Za-z0-9._-]{0,127},
// with its length checked apart: a key is valid in every store. (The
// bounded repetition compiled to a program 128 classes long, 1.4 ms of
// every process's start.)
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

// maxKeyLen is the longest key: an OCI tag's 128 characters.
const maxKeyLen = 128

// ValidateKey checks that key can name an entry in every store: 1 to 128
// characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'
// (the grammar of an OCI tag).
func ValidateKey(key string) error {
	if len(key) > maxKeyLen || !keyPattern.MatchString(key) {
		return fmt.Errorf("%w %q: use 1-128 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'", ErrInvalidKey, key)
	}
	return nil
}

// keyMapped are the characters MapKey turns into '-': the separators of the
// reference tool's object-store keys (cache-go:HASH), branch names
// (feature/x) and versions (pkg@1.2, 1.0+build, base64 '=' padding).
const keyMapped = ":/@+="

// MapKey returns key unchanged when it is valid, else the key with each of
// ':', '/', '@', '+' and '=' replaced by '-', and whether it changed it. The
// mapping works character by character, so a restore-key prefix mapped the
// same way still prefixes the mapped key. A key that is invalid for another
// reason (a space, a leading '.' or '-', too long) gives ErrInvalidKey.
func MapKey(key string) (string, bool, error) {
	if ValidateKey(key) == nil {
		return key, false, nil
	}
	mapped := strings.Map(func(r rune) rune {
		if strings.ContainsRune(keyMapped, r) {
			return '-'
		}
		return r
	}, key)
	if mapped != key && ValidateKey(mapped) == nil {
		return mapped, true, nil
	}
	return "", false, ValidateKey(key)
}

// MapPrefix is MapKey for a restore-key prefix (which may be empty).
func MapPrefix(prefix string) (string, bool, error) {
	if prefix == "" {
		return "", false, nil
	}
	return MapKey(prefix)
}

// ValidatePrefix checks that prefix can start a key (an empty prefix is valid).
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(prefix)
}

// ContextReader returns a reader that fails once ctx is done, so that a
// cancelled Put stops between reads.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
