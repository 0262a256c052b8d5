package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// ErrDamaged is wrapped by the errors of Load for an entry that is broken
// itself (its index missing, not what the ref says, undecodable, or listing
// other packs than the ref), as opposed to a store that failed to answer.
var ErrDamaged = errors.New("damaged entry")

// damaged marks err as ErrDamaged without changing its text.
type damaged struct{ err error }

func (d damaged) Error() string   { return d.err.Error() }
func (d damaged) Unwrap() []error { return []error{ErrDamaged, d.err} }

// Entry is a cache entry read from a store.
type Entry struct {
	Ref *store.Ref
	// Index is the entry's index, checked against Ref.
	Index *archive.Index
	// Blob is the index as stored (Ref.Index describes it).
	Blob []byte
}

// maxIndexBlob bounds the compressed index read from a store.
const maxIndexBlob = 256 << 20

// Load reads the index of ref from st and checks it: its digest and size
// are the ref's, it decodes and validates, and it lists the ref's packs.
// It does not check that the packs are in the store. An entry that fails a
// check gives an error wrapping ErrDamaged.
func Load(ctx context.Context, st store.BlobStore, ref *store.Ref) (*Entry, error) {
	if ref.Index.Size > maxIndexBlob {
		return nil, fmt.Errorf("entry %s: index of %d bytes is too large", ref.Key, ref.Index.Size)
	}
	rc, err := st.GetBlob(ctx, ref.Index.Digest)
	if err != nil {
		return nil, markDamage(fmt.Errorf("entry %s: %w", ref.Key, err))
	}
	defer rc.Close()
	// Read into a buffer of the ref's size (checked by the verifier), not
	// grown by copies: 600,000 entries make a 40 MB index.
	buf := bytes.NewBuffer(make([]byte, 0, max(0, ref.Index.Size)+bytes.MinRead))
	_, err = buf.ReadFrom(digest.NewVerifier(rc, ref.Index.Digest, ref.Index.Size))
	blob := buf.Bytes()
	if err != nil {
		return nil, markDamage(fmt.Errorf("entry %s: reading index: %w", ref.Key, err))
	}
	x, err := archive.DecodeIndex(blob)
	if err != nil {
		return nil, damaged{fmt.Errorf("entry %s: %w", ref.Key, err)}
	}
	if len(x.Packs) != len(ref.Packs) {
		return nil, damaged{fmt.Errorf("entry %s: the ref lists %d packs, its index %d: refusing an inconsistent entry", ref.Key, len(ref.Packs), len(x.Packs))}
	}
	for i, p := range x.Packs {
		if p != ref.Packs[i] {
			return nil, damaged{fmt.Errorf("entry %s: pack %d differs between ref and index: refusing an inconsistent entry", ref.Key, i)}
		}
	}
	return &Entry{Ref: ref, Index: x, Blob: blob}, nil
}

// List returns the entries whose key starts with prefix, newest first (by
// Created, then by key), reading every ref (store.Refs): none is not an
// error, and there is no cap on their number. Refs another tool wrote are
// left out.
func List(ctx context.Context, st store.RefStore, prefix string) ([]*store.Ref, error) {
	refs, err := store.Refs(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	store.SortNewestFirst(refs)
	return refs, nil
}

// markDamage marks err as ErrDamaged when it says a blob is gone or is not
// what the ref says.
func markDamage(err error) error {
	if isDamage(err) {
		return damaged{err}
	}
	return err
}

// isDamage tells whether err means the entry itself is broken (a blob gone
// or not what the ref says), as opposed to the store failing to answer.
func isDamage(err error) bool {
	return errors.Is(err, ErrDamaged) || errors.Is(err, store.ErrNotFound) || errors.Is(err, digest.ErrMismatch) ||
		errors.Is(err, archive.ErrCorrupt) || errors.Is(err, archive.ErrUnsafe)
}

// CountFiles counts the files of x, and the empty ones among them.
func CountFiles(x *archive.Index) (files, empty int) {
	for i := range x.Entries {
		if x.Entries[i].Type == archive.TypeFile {
			files++
			if x.Entries[i].Size == 0 {
				empty++
			}
		}
	}
	return files, empty
}
