package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// PendingRecord is the name of the record (store.MetaStore) in which a
// prune leaves the blobs it saw unnamed, for the next one.
const PendingRecord = "gc-pending"

// Options say how Prune runs.
type Options struct {
	// DryRun decides and reports, and changes nothing in the store.
	DryRun bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logf receives what is done, one line at a time; nil is silent.
	Logf func(format string, args ...any)
	// ByUse ranks and ages entries by their last use (Policy.LastUsed,
	// read from the store's last-use records, ReadUses) instead of their
	// creation, on a store that keeps records; `cache serve` records the
	// restores it answers. Off: by creation, as `cache prune` does.
	ByUse bool
	// Internal, when set, says which refs are a front end's bookkeeping
	// rather than entries (cache-serve's GitHub Actions uploads in
	// progress): they are neither evicted nor counted, and the blobs they
	// name are kept like those of any ref.
	Internal func(key string) bool
}

// Result says what Prune decided and did.
type Result struct {
	// Kept are the entries in scope left, newest first.
	Kept []*store.Ref
	// Removed are the entries removed (or, in a dry run, to remove).
	Removed []Decision
	// Blobs says what happened to the blobs.
	Blobs BlobResult
}

// BlobResult is the blob half of a prune.
type BlobResult struct {
	// Swept is false when the store cannot list its blobs (a registry,
	// whose own garbage collection removes the blobs of deleted
	// manifests), and Why says so.
	Swept bool
	Why   string
	// Deleted are the blobs removed (or to remove, in a dry run), and
	// DeletedBytes their size.
	Deleted      []digest.Digest
	DeletedBytes int64
	// Live, Young and Waiting are as in Sweep.
	Live, Young, Waiting int
	// Withdrawn are the entries published during the prune that named a
	// blob it removed: their refs are deleted, so that they miss cleanly
	// instead of failing as damaged.
	Withdrawn []string
}

// inventory is every entry of a store: the readable ones and the keys of
// the damaged ones.
type inventory struct {
	refs    []*store.Ref
	damaged []string
}

// readAll reads every ref of st (store.RefsOrDamaged): any failure but a
// damaged ref stops the prune, since deciding which blobs are unnamed
// needs every ref.
func readAll(ctx context.Context, st store.RefStore) (*inventory, error) {
	refs, damaged, err := store.RefsOrDamaged(ctx, st)
	if err != nil {
		return nil, err
	}
	return &inventory{refs: refs, damaged: damaged}, nil
}

// live is the set of blobs the refs name.
func live(refs []*store.Ref) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, r := range refs {
		for _, d := range r.Blobs() {
			m[d.Digest] = true
		}
	}
	return m
}

// Prune removes from st what p says, in the order that keeps concurrent
// saves safe:
//
//  1. it reads every ref and decides which entries go (SelectEntries; a
//     damaged ref in scope goes too), and deletes their refs;
//  2. on a store that lists its blobs, it lists them, then reads the refs
//     again (a save that published meanwhile names its blobs), and deletes
//     the blobs SelectBlobs picks: unnamed, written at least p.Grace ago,
//     and unnamed for p.Grace already according to the previous prune's
//     record, which it then rewrites. So a blob a save uploads before its
//     ref exists, or reuses from an entry this prune removed, survives for
//     the grace period whatever the timing;
//  3. it reads the refs a third time and withdraws (deletes the ref of) an
//     entry published during step 2 that names a blob it deleted, so that
//     entry misses cleanly.
//
// A dry run does step 1's and 2's reading and deciding only.
func Prune(ctx context.Context, st store.Store, p Policy, o Options) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	del, canDelete := store.As[store.Deleter](st)
	if !canDelete && !o.DryRun {
		return nil, fmt.Errorf("%s cannot delete entries", st)
	}
	inv, err := readAll(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("reading the entries of %s: %w", st, err)
	}
	now := o.Now()
	entries, damaged := inv.refs, inv.damaged
	if o.Internal != nil {
		entries = slices.DeleteFunc(slices.Clone(entries), func(r *store.Ref) bool { return o.Internal(r.Key) })
		damaged = slices.DeleteFunc(slices.Clone(damaged), o.Internal)
	}
	meta, hasMeta := store.As[store.MetaStore](st)
	if o.ByUse && hasMeta {
		if p.LastUsed, err = ReadUses(ctx, meta, entries, now); err != nil {
			return nil, fmt.Errorf("reading when the entries of %s were last used: %w", st, err)
		}
	}
	res := &Result{}
	res.Kept, res.Removed = SelectEntries(entries, p, now)
	for _, k := range damaged {
		if strings.HasPrefix(k, p.Prefix) {
			res.Removed = append(res.Removed, Decision{Key: k, Rule: RuleDamaged})
		}
	}
	removed := map[string]bool{}
	for _, d := range res.Removed {
		removed[d.Key] = true
		if o.DryRun {
			continue
		}
		if err := del.DeleteRef(ctx, d.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return res, fmt.Errorf("removing entry %s: %w", d.Key, err)
		}
		o.Logf("removed entry %s (%s)", d.Key, d.describe(p))
	}

	lister, canList := store.As[store.BlobLister](st)
	if !canList {
		res.Blobs.Why = fmt.Sprintf("%s cannot list its blobs: its own garbage collection removes those of deleted entries (docs/PRUNE.md)", st)
		return res, nil
	}
	if !canDelete {
		res.Blobs.Why = fmt.Sprintf("%s cannot delete blobs", st)
		return res, nil
	}
	blobs, err := lister.ListBlobs(ctx)
	if err != nil {
		return res, fmt.Errorf("listing the blobs of %s: %w", st, err)
	}
	var named []*store.Ref
	if o.DryRun {
		for _, r := range inv.refs {
			if !removed[r.Key] {
				named = append(named, r)
			}
		}
	} else if inv, err = readAll(ctx, st); err != nil {
		return res, fmt.Errorf("reading the entries of %s again: %w", st, err)
	} else {
		named = inv.refs
	}
	pending := map[digest.Digest]time.Time{}
	if hasMeta {
		pending = readPending(ctx, meta, o.Logf)
	}
	sw := SelectBlobs(blobs, live(named), pending, p.Grace, now)
	if !hasMeta && p.Grace > 0 {
		// Without a record, no blob can be known unnamed for long enough.
		sw.Waiting += len(sw.Delete)
		sw.Delete = nil
	}
	res.Blobs = BlobResult{Swept: true, Live: sw.Live, Young: sw.Young, Waiting: sw.Waiting, DeletedBytes: Bytes(sw.Delete)}
	for _, b := range sw.Delete {
		res.Blobs.Deleted = append(res.Blobs.Deleted, b.Digest)
	}
	if o.DryRun {
		return res, nil
	}
	if hasMeta {
		// Written before the deletes: a prune stopped half-way leaves a
		// record that still holds what it had not deleted yet.
		if err := writePending(ctx, meta, sw.Pending); err != nil {
			return res, err
		}
	}
	if err := deleteBlobs(ctx, del, res.Blobs.Deleted); err != nil {
		return res, err
	}
	o.Logf("removed %d blobs (%d bytes) no entry names; kept %d unnamed for the grace period of %s", len(res.Blobs.Deleted), res.Blobs.DeletedBytes, sw.Young+sw.Waiting, p.Grace)
	if len(res.Blobs.Deleted) == 0 {
		return res, nil
	}
	after, err := readAll(ctx, st)
	if err != nil {
		return res, fmt.Errorf("reading the entries of %s after the sweep: %w", st, err)
	}
	gone := map[digest.Digest]bool{}
	for _, d := range res.Blobs.Deleted {
		gone[d] = true
	}
	for _, r := range after.refs {
		for _, b := range r.Blobs() {
			if d := b.Digest; gone[d] {
				if err := del.DeleteRef(ctx, r.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
					return res, fmt.Errorf("withdrawing entry %s, which names a removed blob: %w", r.Key, err)
				}
				o.Logf("warning: entry %s was published during the prune and names blob %s, which it removed: withdrawn (the next save writes it again)", r.Key, d.Short())
				res.Blobs.Withdrawn = append(res.Blobs.Withdrawn, r.Key)
				break
			}
		}
	}
	return res, nil
}

// deleteBlobs deletes ds, 8 at a time.
func deleteBlobs(ctx context.Context, del store.Deleter, ds []digest.Digest) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, d := range ds {
		g.Go(func() error {
			if err := del.DeleteBlob(gctx, d); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("removing blob %s: %w", d.Short(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// pendingFile is the JSON of the pending record.
type pendingFile struct {
	Format int                         `json:"format"`
	Blobs  map[digest.Digest]time.Time `json:"blobs"` // when first seen unnamed
}

// readPending reads the previous prune's record. A missing or unreadable
// one is empty: that only delays deletes by one grace period.
func readPending(ctx context.Context, meta store.MetaStore, logf func(string, ...any)) map[digest.Digest]time.Time {
	m := map[digest.Digest]time.Time{}
	data, err := meta.GetMeta(ctx, PendingRecord)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			logf("warning: reading the previous prune's record: %v (unnamed blobs are kept one more grace period)", err)
		}
		return m
	}
	var f pendingFile
	if err := json.Unmarshal(data, &f); err != nil || f.Format != 1 {
		logf("warning: the previous prune's record is unreadable (unnamed blobs are kept one more grace period)")
		return m
	}
	for d, t := range f.Blobs {
		if d.Validate() == nil {
			m[d] = t
		}
	}
	return m
}

// writePending records the blobs seen unnamed.
func writePending(ctx context.Context, meta store.MetaStore, pending map[digest.Digest]time.Time) error {
	data, err := json.Marshal(pendingFile{Format: 1, Blobs: pending})
	if err != nil {
		return err
	}
	if err := meta.PutMeta(ctx, PendingRecord, data); err != nil {
		return fmt.Errorf("recording the blobs no entry names: %w", err)
	}
	return nil
}
