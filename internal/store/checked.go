package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// Checked returns s with its arguments checked before the backend sees
// them: keys with ValidateKey, prefixes with ValidatePrefix, digests with
// Validate, refs with Ref.Validate. Every error it returns names the store,
// the operation and the key or digest: those of the backend that do not
// already name the store get the prefix "STORE: OP KEY: ". It is the one
// place for what every store needs on every call (metrics and tracing
// later), so that a backend that is not a Bucket (oci) does not repeat it.
//
// It has the optional capabilities of s (see As), checked the same way.
// Mux.Open applies it outside the retries (Checked(WithRetries(st))): an
// invalid argument is refused before any attempt, and an error is named
// once, after the last one. Checked of a checked store returns it as it is.
func Checked(s Store) Store {
	if c, ok := s.(*checked); ok {
		return c
	}
	return &checked{st: s}
}

// checked is the Store of Checked.
type checked struct{ st Store }

var (
	_ Store      = (*checked)(nil)
	_ Unwrapper  = (*checked)(nil)
	_ Deleter    = (*checked)(nil)
	_ BlobStager = (*checked)(nil)
	_ BlobLister = (*checked)(nil)
	_ BlobRanger = (*checked)(nil)
	_ RefLister  = (*checked)(nil)
)

// Unwrap implements Unwrapper.
func (c *checked) Unwrap() Store { return c.st }

// String implements Store.
func (c *checked) String() string { return c.st.String() }

// refused is the error of an argument the backend never saw: it names the
// store and the operation (the check's message names the key or digest).
func (c *checked) refused(op string, err error) error {
	return fmt.Errorf("%s: %s: %w", c.st, op, err)
}

// name gives err, of op on what, the store's name unless it has it.
func (c *checked) name(op, what string, err error) error {
	if err == nil || strings.Contains(err.Error(), c.st.String()) {
		return err
	}
	if what != "" {
		op += " " + what
	}
	return fmt.Errorf("%s: %s: %w", c.st, op, err)
}

// unsupported is the error of a capability the backend lacks (As said so;
// a caller asserted it anyway).
func (c *checked) unsupported(op string) error {
	return fmt.Errorf("%s: %s: %w", c.st, op, errors.ErrUnsupported)
}

// StatBlob implements Store.
func (c *checked) StatBlob(ctx context.Context, d digest.Digest) (BlobInfo, error) {
	if err := d.Validate(); err != nil {
		return BlobInfo{}, c.refused("stat blob", err)
	}
	info, err := c.st.StatBlob(ctx, d)
	return info, c.name("stat blob", d.Short(), err)
}

// GetBlob implements Store.
func (c *checked) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, c.refused("get blob", err)
	}
	rc, err := c.st.GetBlob(ctx, d)
	return rc, c.name("get blob", d.Short(), err)
}

// GetBlobRange implements BlobRanger when the backend is one.
func (c *checked) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	op := "get blob range"
	if err := d.Validate(); err != nil {
		return nil, c.refused(op, err)
	}
	if off < 0 {
		return nil, c.refused(op, fmt.Errorf("blob %s: negative offset %d", d.Short(), off))
	}
	br, ok := As[BlobRanger](c.st)
	if !ok {
		return nil, c.unsupported(op)
	}
	rc, err := br.GetBlobRange(ctx, d, off)
	return rc, c.name("get blob", fmt.Sprintf("%s from byte %d", d.Short(), off), err)
}

// PutBlob implements Store.
func (c *checked) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if err := d.Validate(); err != nil {
		return c.refused("put blob", err)
	}
	return c.name("put blob", d.Short(), c.st.PutBlob(ctx, d, size, r))
}

// GetRef implements Store.
func (c *checked) GetRef(ctx context.Context, key string) (*Ref, error) {
	if err := ValidateKey(key); err != nil {
		return nil, c.refused("get ref", err)
	}
	ref, err := c.st.GetRef(ctx, key)
	return ref, c.name("get ref", fmt.Sprintf("%q", key), err)
}

// PutRef implements Store.
func (c *checked) PutRef(ctx context.Context, ref *Ref) error {
	if ref == nil {
		return c.refused("put ref", errors.New("no ref"))
	}
	if err := ref.Validate(); err != nil {
		return c.refused("put ref", err)
	}
	return c.name("put ref", fmt.Sprintf("%q", ref.Key), c.st.PutRef(ctx, ref))
}

// ListRefs implements Store.
func (c *checked) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, c.refused("list refs", err)
	}
	keys, err := c.st.ListRefs(ctx, prefix)
	return keys, c.name("list refs", fmt.Sprintf("%q", prefix), err)
}

// MissingBlobs implements BlobChecker when the backend is one. What it
// answers is kept to digests that were asked about.
func (c *checked) MissingBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	op := "check blobs"
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			return nil, c.refused(op, err)
		}
	}
	bc, ok := As[BlobChecker](c.st)
	if !ok {
		return nil, c.unsupported(op)
	}
	missing, err := bc.MissingBlobs(ctx, ds)
	if err != nil {
		return nil, c.name(op, fmt.Sprintf("(%d)", len(ds)), err)
	}
	asked := make(map[digest.Digest]bool, len(ds))
	for _, d := range ds {
		asked[d] = true
	}
	out := missing[:0]
	for _, d := range missing {
		if asked[d] {
			out = append(out, d)
		}
	}
	return out, nil
}

// ListRefInfo implements RefLister when the backend is one.
func (c *checked) ListRefInfo(ctx context.Context, prefix string) ([]RefInfo, error) {
	op := "list refs"
	if err := ValidatePrefix(prefix); err != nil {
		return nil, c.refused(op, err)
	}
	rl, ok := As[RefLister](c.st)
	if !ok {
		return nil, c.unsupported(op)
	}
	infos, err := rl.ListRefInfo(ctx, prefix)
	return infos, c.name(op, fmt.Sprintf("%q", prefix), err)
}

// DeleteRef implements Deleter when the backend is one.
func (c *checked) DeleteRef(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return c.refused("delete ref", err)
	}
	del, ok := As[Deleter](c.st)
	if !ok {
		return c.unsupported("delete ref")
	}
	return c.name("delete ref", fmt.Sprintf("%q", key), del.DeleteRef(ctx, key))
}

// DeleteBlob implements Deleter when the backend is one.
func (c *checked) DeleteBlob(ctx context.Context, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return c.refused("delete blob", err)
	}
	del, ok := As[Deleter](c.st)
	if !ok {
		return c.unsupported("delete blob")
	}
	return c.name("delete blob", d.Short(), del.DeleteBlob(ctx, d))
}

// ListBlobs implements BlobLister when the backend is one.
func (c *checked) ListBlobs(ctx context.Context) ([]BlobMeta, error) {
	bl, ok := As[BlobLister](c.st)
	if !ok {
		return nil, c.unsupported("list blobs")
	}
	blobs, err := bl.ListBlobs(ctx)
	return blobs, c.name("list blobs", "", err)
}

// StageBlob implements BlobStager when the backend is one. Commit checks
// the digest it is given before the backend's Commit sees it.
func (c *checked) StageBlob(ctx context.Context) (StagedBlob, error) {
	bs, ok := As[BlobStager](c.st)
	if !ok {
		return nil, c.unsupported("stage blob")
	}
	sb, err := bs.StageBlob(ctx)
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			return nil, err // the engine spools instead: not a failure
		}
		return nil, c.name("stage blob", "", err)
	}
	return &checkedStaged{StagedBlob: sb, c: c}, nil
}

// checkedStaged is a StagedBlob of a checked store.
type checkedStaged struct {
	StagedBlob
	c *checked
}

// Commit implements StagedBlob.
func (s *checkedStaged) Commit(ctx context.Context, want digest.Digest, size int64) error {
	err := want.Validate()
	if err == nil {
		err = CheckStaged(s.Digest(), s.Size(), want, size)
	}
	if err != nil {
		s.Abort()
		return s.c.refused("put blob "+want.Short(), err)
	}
	return s.c.name("put blob", want.Short(), s.StagedBlob.Commit(ctx, want, size))
}
