package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// MaxRestoreCandidates bounds how many refs NewestFirst reads for one
// prefix, and how many Candidates reads when the store gives no time to
// order them by.
const MaxRestoreCandidates = 1000

// How Candidates uses the times of a RefLister (see docs/ARCHITECTURE.md,
// "Store interface").
const (
	// hintBatch refs are read at once, in parallel.
	hintBatch = 8
	// hintWindow is the most refs read before the next one is given: past
	// it, the best read so far is given even if a ref not read yet may be
	// newer (more than hintWindow saves within hintSlack of each other).
	hintWindow = 2 * hintBatch
	// hintSlack covers the listing's resolution (S3 lists whole seconds)
	// and the skew between a saver's clock (Created) and the store's
	// (Modified): a ref not read yet is taken to have Created at most
	// hintSlack after its Modified.
	hintSlack = 2 * time.Second
	// hintTrust is how far a ref's Created may be from its Modified before
	// the times are taken for something else than save times (a bucket
	// copied, files touched): a save writes its ref right after it sets
	// Created. Candidates then reads every ref, as if it had no times.
	hintTrust = 10 * time.Minute
)

// Newest returns the newest ref (by Created, then by key) whose key starts
// with prefix, or ErrNotFound. It is the first of Candidates.
func Newest(ctx context.Context, st RefStore, prefix string) (*Ref, error) {
	for r, err := range Candidates(ctx, st, prefix) {
		return r, err
	}
	return nil, fmt.Errorf("%s: no key starts with %q: %w", st, prefix, ErrNotFound)
}

// Candidates yields the refs whose key starts with prefix, newest first
// (by Created, then by key), reading them as it goes; none yields nothing.
// An error is yielded once, last.
//
// When the store is a RefLister (object stores, OCI), the listing's times give
// the order in which refs are read: the most recently written first, a few
// at a time, and a ref is yielded once no ref left unread can be newer
// (its Modified is more than hintSlack older than the ref's Created). So
// the first ref costs one listing and a few reads whatever the number of
// keys: at most hintWindow, after which the newest read so far is yielded.
// Refs without a time, and every ref once times are seen not to be save
// times (hintTrust), are read as NewestFirst reads them (at most
// MaxRestoreCandidates). A time only orders the reads: every ref yielded
// was read and validated by GetRef.
func Candidates(ctx context.Context, st RefStore, prefix string) iter.Seq2[*Ref, error] {
	return func(yield func(*Ref, error) bool) {
		c, err := newCandidates(ctx, st, prefix)
		for err == nil {
			var r *Ref
			if r, err = c.next(); r == nil && err == nil {
				return
			}
			if err == nil && !yield(r, nil) {
				return
			}
		}
		yield(nil, err)
	}
}

// candidates is the state of one Candidates.
type candidates struct {
	ctx    context.Context
	st     RefStore
	prefix string
	unread []RefInfo // newest Modified first
	read   []*Ref    // read, not yielded
	keys   int       // keys listed (with a time or not)
	since  int       // refs read since the last one yielded
	timed  bool      // the times are save times
}

func newCandidates(ctx context.Context, st RefStore, prefix string) (*candidates, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	infos, err := listRefInfo(ctx, st, prefix)
	if err != nil {
		return nil, err
	}
	c := &candidates{ctx: ctx, st: st, prefix: prefix, keys: len(infos), timed: true}
	var untimed []RefInfo
	for _, in := range infos {
		if in.Modified.IsZero() {
			untimed = append(untimed, in)
		} else {
			c.unread = append(c.unread, in)
		}
	}
	slices.SortFunc(c.unread, func(a, b RefInfo) int {
		if d := b.Modified.Compare(a.Modified); d != 0 {
			return d
		}
		return strings.Compare(b.Key, a.Key)
	})
	if len(untimed) == 0 {
		return c, nil
	}
	// Refs without a time could be anywhere in the order: read them all,
	// and then still the first of those with a time.
	err = c.readAll(untimed, len(untimed))
	c.since = 0
	return c, err
}

// listRefInfo lists the keys of prefix with their times when st is a
// RefLister (through any wrapper), else without.
func listRefInfo(ctx context.Context, st RefStore, prefix string) ([]RefInfo, error) {
	var rl RefLister
	if s, ok := st.(Store); ok {
		rl, _ = As[RefLister](s)
	} else {
		rl, _ = st.(RefLister)
	}
	if rl != nil {
		return rl.ListRefInfo(ctx, prefix)
	}
	keys, err := st.ListRefs(ctx, prefix)
	return untimed(keys), err
}

// untimed returns keys as a listing without times.
func untimed(keys []string) []RefInfo {
	infos := make([]RefInfo, len(keys))
	for i, k := range keys {
		infos[i].Key = k
	}
	return infos
}

// next returns the next ref, nil when there is none left.
func (c *candidates) next() (*Ref, error) {
	for len(c.unread) > 0 && !c.settled() {
		if !c.timed {
			err := c.readAll(c.unread, c.keys)
			c.unread = nil
			if err != nil {
				return nil, err
			}
			break
		}
		if c.since >= hintWindow && len(c.read) > 0 {
			break
		}
		n := min(hintBatch, len(c.unread))
		if err := c.readInfos(c.unread[:n]); err != nil {
			return nil, err
		}
		c.unread = c.unread[n:]
	}
	return c.pop(), nil
}

// settled reports whether the best ref read is newer than any left unread.
func (c *candidates) settled() bool {
	if !c.timed || len(c.read) == 0 {
		return false
	}
	return c.read[c.best()].Created.After(c.unread[0].Modified.Add(hintSlack))
}

// best returns the index of the newest ref read (len(c.read) > 0).
func (c *candidates) best() int {
	b := 0
	for i, r := range c.read[1:] {
		if newer(r, c.read[b]) {
			b = i + 1
		}
	}
	return b
}

// pop removes and returns the newest ref read, nil when none is.
func (c *candidates) pop() *Ref {
	if len(c.read) == 0 {
		return nil
	}
	b := c.best()
	r := c.read[b]
	c.read = slices.Delete(c.read, b, b+1)
	c.since = 0
	return r
}

// readAll reads every ref of infos, as NewestFirst does: when n (the keys
// this reads all of) is more than MaxRestoreCandidates, it fails before it
// reads any.
func (c *candidates) readAll(infos []RefInfo, n int) error {
	if n > MaxRestoreCandidates {
		return tooMany(c.st, n, c.prefix)
	}
	return c.readInfos(infos)
}

// readInfos reads the refs of infos (hintBatch at a time) into c.read, and
// stops trusting the times when a ref's Created is far from its Modified.
func (c *candidates) readInfos(infos []RefInfo) error {
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Key
	}
	refs, _, err := getRefs(c.ctx, c.st, keys, false)
	if err != nil {
		return err
	}
	for i, r := range refs {
		if r == nil {
			continue // deleted since the listing
		}
		m := infos[i].Modified
		if !m.IsZero() && (r.Created.Sub(m) > hintTrust || m.Sub(r.Created) > hintTrust) {
			c.timed = false
		}
		c.read = append(c.read, r)
	}
	c.since += len(infos)
	return nil
}

// newer reports whether a ranks before b: later Created, then greater key.
func newer(a, b *Ref) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Key > b.Key
}

func tooMany(st RefStore, n int, prefix string) error {
	return fmt.Errorf("%s: %d keys start with %q, more than %d: use a more specific restore key", st, n, prefix, MaxRestoreCandidates)
}

// NewestFirst returns the refs whose key starts with prefix, newest first
// (by Created, then by key), or ErrNotFound when there is none. It reads
// every candidate ref (see Refs), for a listing of them all; more than
// MaxRestoreCandidates is an error. A restore reads them lazily instead
// (Candidates).
func NewestFirst(ctx context.Context, st RefStore, prefix string) ([]*Ref, error) {
	refs, err := readRefs(ctx, st, prefix, MaxRestoreCandidates)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%s: no key starts with %q: %w", st, prefix, ErrNotFound)
	}
	SortNewestFirst(refs)
	return refs, nil
}

// SortNewestFirst orders refs newest first: by Created, then by key
// (descending), the order in which restore keys choose.
func SortNewestFirst(refs []*Ref) {
	sort.SliceStable(refs, func(i, j int) bool { return newer(refs[i], refs[j]) })
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
		return nil, tooMany(st, len(keys), prefix)
	}
	refs, _, err := getRefs(ctx, st, keys, false)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(refs, func(r *Ref) bool { return r == nil }), nil
}

// RefsOrDamaged is Refs over every key, except that a ref that is ours but
// damaged (ErrDamagedRef: it will never restore) does not fail it: its key
// is returned in damaged. What must see every entry (a prune deciding
// which blobs no entry names) reads them so.
func RefsOrDamaged(ctx context.Context, st RefStore) (refs []*Ref, damaged []string, err error) {
	keys, err := st.ListRefs(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	all, bad, err := getRefs(ctx, st, keys, true)
	if err != nil {
		return nil, nil, err
	}
	for i, r := range all {
		if r != nil {
			refs = append(refs, r)
		} else if bad[i] {
			damaged = append(damaged, keys[i])
		}
	}
	return refs, damaged, nil
}

// getRefs reads the refs of keys, hintBatch at a time; a ref deleted since
// the listing is nil. With keepDamaged, a damaged ref is nil too, and
// marked in bad; without, it fails the read.
func getRefs(ctx context.Context, st RefStore, keys []string, keepDamaged bool) (refs []*Ref, bad []bool, err error) {
	refs, bad = make([]*Ref, len(keys)), make([]bool, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(hintBatch)
	for i, k := range keys {
		g.Go(func() error {
			r, err := st.GetRef(gctx, k)
			switch {
			case errors.Is(err, ErrNotFound):
				return nil // deleted since the listing, or another tool's
			case keepDamaged && errors.Is(err, ErrDamagedRef):
				bad[i] = true
				return nil
			case err != nil:
				return err
			}
			refs[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return refs, bad, nil
}
