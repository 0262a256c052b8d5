package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// checkBlobs tells whether every blob an entry needs (its index and packs)
// is in the store, with one cheap stat each (8 at once). It returns a
// description of what is missing, or an error when the store could not say.
func checkBlobs(ctx context.Context, st store.Store, ref *store.Ref) (string, error) {
	blobs := append([]format.Descriptor{ref.Index}, ref.Packs...)
	var mu sync.Mutex
	var missing []string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, b := range blobs {
		g.Go(func() error {
			info, err := st.StatBlob(gctx, b.Digest)
			what := "pack " + b.Digest.Short()
			if i == 0 {
				what = "index " + b.Digest.Short()
			}
			switch {
			case errors.Is(err, store.ErrNotFound):
				what += " is missing"
			case err != nil:
				return err
			case info.Size != b.Size:
				what = fmt.Sprintf("%s has %d bytes, not %d", what, info.Size, b.Size)
			default:
				return nil
			}
			mu.Lock()
			missing = append(missing, what)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	switch len(missing) {
	case 0:
		return "", nil
	case 1:
		return missing[0], nil
	}
	return fmt.Sprintf("%s (and %d more blob(s))", missing[0], len(missing)-1), nil
}

// loadIndex loads the entry of ref. A damaged entry gives a reason; a
// store that fails to answer gives an error.
func loadIndex(ctx context.Context, st store.Store, ref *store.Ref) (*Entry, string, error) {
	e, err := Load(ctx, st, ref)
	if errors.Is(err, ErrDamaged) {
		return nil, err.Error(), nil
	}
	return e, "", err
}

// existingProblem says why the entry already under a key should be
// replaced by a save of folders names (empty: it is whole and holds the
// same folders, so the save is skipped). It reads the ref's record of its
// folders, or the index of an older entry, and stats every blob.
func existingProblem(ctx context.Context, st store.Store, ref *store.Ref, names []string) (string, error) {
	if err := ref.Validate(); err != nil {
		return err.Error(), nil
	}
	missing, err := checkBlobs(ctx, st, ref)
	if err != nil || missing != "" {
		return missing, err
	}
	held, byBase := entryFolders(ref, nil)
	if held == nil {
		e, why, err := loadIndex(ctx, st, ref)
		if err != nil || why != "" {
			return why, err
		}
		held, byBase = entryFolders(ref, e.Index)
	}
	if !sameFolderSet(held, byBase, names) {
		return fmt.Sprintf("it holds folder(s) %q, this save has %q", held, names), nil
	}
	return "", nil
}

// keepExisting decides, before a save without Force, whether the entry
// already under the key stays (the save is skipped) or is replaced.
func keepExisting(ctx context.Context, st store.Store, opts SaveOptions, names []string, res *SaveResult) (bool, error) {
	ref, err := st.GetRef(ctx, opts.Key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if why := platformProblem(ref, opts.Platform, opts.AnyPlatform); why != "" {
		res.Skipped, res.SkipReason = true, fmt.Sprintf("key %s already exists in %s, saved on %s (this is %s): kept; put {{os}}-{{arch}} in the key so each platform has its own entry, or pass --force to overwrite", opts.Key, st, ref.Platform, opts.Platform)
		return true, nil
	}
	why, err := existingProblem(ctx, st, ref, names)
	if err != nil {
		return false, fmt.Errorf("checking the entry under key %s: %w", opts.Key, err)
	}
	if why == "" {
		res.Skipped, res.SkipReason = true, fmt.Sprintf("key %s already exists in %s and is whole (use --force to overwrite)", opts.Key, st)
		return true, nil
	}
	res.Replaced = why
	opts.Logf("replacing the entry under key %s: %s", opts.Key, why)
	return false, nil
}
