package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"golang.org/x/sync/errgroup"
)

// MaxRestoreCandidates bounds how many refs Newest reads for one prefix.
const MaxRestoreCandidates = 1000

// Newest returns the newest ref (by Created, then by key) whose key starts
// with prefix, or ErrNotFound. See NewestFirst.
func Newest(ctx context.Context, st RefStore, prefix string) (*Ref, error) {
	refs, err := NewestFirst(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	return refs[0], nil
}

// NewestFirst returns the refs whose key starts with prefix, newest first
// (by Created, then by key), or ErrNotFound when there is none. It reads
// each candidate ref (see Refs): restore-key prefixes should be specific
// enough to match tens of keys, not thousands, and more than
// MaxRestoreCandidates is an error.
func NewestFirst(ctx context.Context, st RefStore, prefix string) ([]*Ref, error) {
	refs, err := readRefs(ctx, st, prefix, MaxRestoreCandidates)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s: no key starts with %q: %w", st, prefix, ErrNotFound)
	}
	sort.SliceStable(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.After(b.Created)
		}
		return a.Key > b.Key
	})
	return refs, nil
}

// Refs returns every ref whose key starts with prefix, in any order (none
// is not an error). It lists the keys, then reads each ref (one small GET
// each, 8 at a time); a ref deleted since the listing is left out.
func Refs(ctx context.Context, st RefStore, prefix string) ([]*Ref, error) {
	return readRefs(ctx, st, prefix, 0)
}

// readRefs is Refs, failing before it reads any ref when more than limit
// keys (limit > 0) start with prefix.
func readRefs(ctx context.Context, st RefStore, prefix string, limit int) ([]*Ref, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	keys, err := st.ListRefs(ctx, prefix)
	if err != nil {
		return nil, err
	}
	if limit > 0 && len(keys) > limit {
		return nil, fmt.Errorf("%s: %d keys start with %q, more than %d: use a more specific restore key", st, len(keys), prefix, limit)
	}
	refs := make([]*Ref, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, k := range keys {
		g.Go(func() error {
			r, err := st.GetRef(gctx, k)
			if errors.Is(err, ErrNotFound) {
				return nil // deleted since the listing
			}
			if err != nil {
				return err
			}
			refs[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(refs, func(r *Ref) bool { return r == nil }), nil
}
