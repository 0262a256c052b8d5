package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sync/errgroup"
)

// MaxRestoreCandidates bounds how many refs Newest reads for one prefix.
const MaxRestoreCandidates = 1000

// Newest returns the newest ref (by Created, then by key) whose key starts
// with prefix, or ErrNotFound. It lists the keys, then reads each candidate
// ref (one small GET each, 8 at a time): restore-key prefixes should be
// specific enough to match tens of keys, not thousands.
func Newest(ctx context.Context, st Store, prefix string) (*Ref, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	keys, err := st.ListRefs(ctx, prefix)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key starts with %q: %w", st, prefix, ErrNotFound)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(keys)))
	if len(keys) > MaxRestoreCandidates {
		return nil, fmt.Errorf("%s: %d keys start with %q, more than %d: use a more specific restore key", st, len(keys), prefix, MaxRestoreCandidates)
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
	var best *Ref
	for _, r := range refs {
		if r == nil {
			continue
		}
		if best == nil || r.Created.After(best.Created) || (r.Created.Equal(best.Created) && r.Key > best.Key) {
			best = r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%s: no key starts with %q: %w", st, prefix, ErrNotFound)
	}
	return best, nil
}
