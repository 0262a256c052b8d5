// Package gc decides and carries out what `cache prune` removes: entries
// by age, count and total size, then the blobs no remaining entry names, in
// an order that is safe while saves run (docs/PRUNE.md). The decisions are
// pure functions of what the store holds and a clock passed in
// (SelectEntries, SelectBlobs); Prune reads the store, applies them, and
// checks what it did.
package gc

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// DefaultGrace is how long a blob that no entry names is kept: a save may
// be uploading it before its ref exists, or building on it.
const DefaultGrace = time.Hour

// Policy says which entries a prune removes. The rules combine: an entry
// is removed when any rule says so. Entries whose key does not start with
// Prefix are out of scope: never removed, and their blobs are kept.
type Policy struct {
	// Prefix limits the entries in scope ("" is every entry).
	Prefix string
	// OlderThan removes the entries last used more than this long ago (0:
	// no age rule).
	OlderThan time.Duration
	// Keep removes all but the Keep most recently used entries (0: no
	// count rule).
	Keep int
	// MaxSize removes the least recently used entries until the blobs of those left
	// (each counted once, however many entries share it) fit in MaxSize
	// bytes (0: no size rule).
	MaxSize int64
	// Grace keeps a blob no entry names until it has been so for Grace, and
	// was written at least Grace ago. Negative is refused; 0 removes such
	// blobs at once (only safe when no save runs).
	Grace time.Duration
	// LastUsed is when the entry of each key was last restored, where
	// known (ReadUses). An entry's last use is the later of its Created
	// and LastUsed[key]; every rule ranks and ages entries by it. Nil: by
	// Created alone, as `cache prune` does.
	LastUsed map[string]time.Time
}

// LastUse is when r was last used according to p: the later of its
// creation and its last restore.
func (p Policy) LastUse(r *store.Ref) time.Time {
	if u, ok := p.LastUsed[r.Key]; ok && u.After(r.Created) {
		return u
	}
	return r.Created
}

// sortByUse sorts refs most recently used first, then newest first (by
// Created, then key), as store.SortNewestFirst does when nothing was used.
func (p Policy) sortByUse(refs []*store.Ref) {
	store.SortNewestFirst(refs)
	if len(p.LastUsed) == 0 {
		return
	}
	sort.SliceStable(refs, func(i, j int) bool { return p.LastUse(refs[i]).After(p.LastUse(refs[j])) })
}

// Validate refuses a policy that says nothing or something impossible.
func (p Policy) Validate() error {
	switch {
	case p.OlderThan < 0:
		return errors.New("--older-than must not be negative")
	case p.Keep < 0:
		return errors.New("--keep must not be negative")
	case p.MaxSize < 0:
		return errors.New("--max-size must not be negative")
	case p.Grace < 0:
		return errors.New("--grace must not be negative")
	case p.OlderThan == 0 && p.Keep == 0 && p.MaxSize == 0:
		return errors.New("no policy: pass --older-than D, --keep N and/or --max-size SIZE")
	}
	return store.ValidatePrefix(p.Prefix)
}

// Rule names, as Decision.Rule gives them.
const (
	RuleAge     = "older-than"
	RuleKeep    = "keep"
	RuleSize    = "max-size"
	RuleDamaged = "damaged"
)

// Decision is an entry a prune removes, and the rule that removes it.
type Decision struct {
	Key string
	// Ref is nil for a damaged entry.
	Ref  *store.Ref
	Rule string
}

// sizes maps each blob the refs name to its size (as the refs give it).
func sizes(refs []*store.Ref) map[digest.Digest]int64 {
	m := map[digest.Digest]int64{}
	for _, r := range refs {
		for _, d := range r.Blobs() {
			m[d.Digest] = d.Size
		}
	}
	return m
}

// SelectEntries applies p to refs at time now: it returns the refs in
// scope that are kept (most recently used first, see Policy.LastUse) and the ones removed, each with the
// first rule that removes it (age, then count, then size). Refs out of
// scope are in neither.
func SelectEntries(refs []*store.Ref, p Policy, now time.Time) (keep []*store.Ref, drop []Decision) {
	var scope []*store.Ref
	for _, r := range refs {
		if strings.HasPrefix(r.Key, p.Prefix) {
			scope = append(scope, r)
		}
	}
	scope = slices.Clone(scope)
	p.sortByUse(scope)
	for _, r := range scope {
		switch {
		case p.OlderThan > 0 && now.Sub(p.LastUse(r)) > p.OlderThan:
			drop = append(drop, Decision{Key: r.Key, Ref: r, Rule: RuleAge})
		case p.Keep > 0 && len(keep) >= p.Keep:
			drop = append(drop, Decision{Key: r.Key, Ref: r, Rule: RuleKeep})
		default:
			keep = append(keep, r)
		}
	}
	if p.MaxSize <= 0 {
		return keep, drop
	}
	// Least recently used first: drop the oldest kept entry while the
	// blobs of the kept ones, each counted once, are over the size.
	size := sizes(keep)
	uses := map[digest.Digest]int{}
	var total int64
	for _, r := range keep {
		for _, d := range r.Blobs() {
			if uses[d.Digest]++; uses[d.Digest] == 1 {
				total += size[d.Digest]
			}
		}
	}
	n := len(keep)
	for n > 0 && total > p.MaxSize {
		n--
		r := keep[n]
		for _, d := range r.Blobs() {
			if uses[d.Digest]--; uses[d.Digest] == 0 {
				total -= size[d.Digest]
			}
		}
		drop = append(drop, Decision{Key: r.Key, Ref: r, Rule: RuleSize})
	}
	return keep[:n], drop
}

// Sweep is what SelectBlobs decides about the blobs of a store.
type Sweep struct {
	// Delete are the blobs removed.
	Delete []store.BlobMeta
	// Live counts the blobs an entry names.
	Live int
	// Young counts the blobs no entry names that were written less than
	// the grace period ago (a save may be uploading them), or whose store
	// cannot say when.
	Young int
	// Waiting counts the blobs no entry names, written long enough ago,
	// but seen unnamed for less than the grace period: a save may be
	// building on them.
	Waiting int
	// Pending is when each blob no entry names was first seen so, for the
	// next prune (the blobs deleted are not in it).
	Pending map[digest.Digest]time.Time
}

// SelectBlobs decides, at time now, which of blobs to delete: a blob is
// deleted when no entry names it (live), it was written at least grace ago
// (a store that cannot tell keeps it), and pending (what earlier prunes
// saw) says it was unnamed at least grace ago already. Every other unnamed
// blob is recorded in the returned Pending, with its first sighting.
// pending is untrusted: a time after now counts as now.
func SelectBlobs(blobs []store.BlobMeta, live map[digest.Digest]bool, pending map[digest.Digest]time.Time, grace time.Duration, now time.Time) Sweep {
	sw := Sweep{Pending: map[digest.Digest]time.Time{}}
	for _, b := range blobs {
		if live[b.Digest] {
			sw.Live++
			continue
		}
		seen, ok := pending[b.Digest]
		if !ok || seen.After(now) {
			seen = now
		}
		switch {
		case b.Modified.IsZero() || now.Sub(b.Modified) < grace:
			sw.Young++
		case now.Sub(seen) < grace:
			sw.Waiting++
		default:
			sw.Delete = append(sw.Delete, b)
			continue
		}
		sw.Pending[b.Digest] = seen
	}
	return sw
}

// Bytes sums the sizes of blobs.
func Bytes(blobs []store.BlobMeta) int64 {
	var n int64
	for _, b := range blobs {
		n += b.Size
	}
	return n
}

// UniqueBytes is what the refs' blobs take in a store, each counted once.
func UniqueBytes(refs []*store.Ref) int64 {
	var n int64
	for _, s := range sizes(refs) {
		n += s
	}
	return n
}

// describe says in a few words why d is removed.
func (d Decision) describe(p Policy) string {
	switch d.Rule {
	case RuleAge:
		if p.LastUsed != nil {
			return fmt.Sprintf("unused for more than %s", p.OlderThan)
		}
		return fmt.Sprintf("older than %s", p.OlderThan)
	case RuleKeep:
		return fmt.Sprintf("not among the %d newest", p.Keep)
	case RuleSize:
		return fmt.Sprintf("over the total of %d bytes", p.MaxSize)
	default:
		return "its ref is damaged"
	}
}
