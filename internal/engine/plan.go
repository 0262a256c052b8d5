package engine

import (
	"context"
	"errors"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Planning a save: which files of the walk are unchanged since the base
// (base.join, matchUnchanged, then hashFiles for those no record proves), which base
// packs are live enough to keep (livePacks, worthKeeping, then stillStored
// asks the store), and how the other files are grouped into new packs
// (planPacks, groupFresh). Everything here but hashFiles and stillStored is
// pure.

// packPlan is what a save writes: the base packs it keeps and the files it
// packs anew.
type packPlan struct {
	// kept are the base packs kept, in the base's order: they are packs
	// 0..len(kept)-1 of the new index.
	kept []format.Descriptor
	// newPos is, per base pack, its position in kept, or -1.
	newPos []int
	// reuse is, per entry of the new index, the base file (1 + its
	// position in base.files) whose digest, pack and offset it takes, or
	// 0: its pack is kept.
	reuse []int
	// fresh are the new packs, in order, numbered from len(kept): the
	// positions in x of their files, in order (4 bytes a file; the
	// packer makes their PackFiles a pack at a time: at 600,000 files,
	// 100 MB of them with their paths held at once otherwise).
	fresh [][]int32
	// same: the new index is the base's (planSave says when).
	same bool
}

// matchUnchanged returns, per entry of x, the base file (1 + its position
// in b.files, or 0) that may hold its content: a file at the same path, of
// the same non-zero size, in a pack of the base (b.join found them). hash
// lists the entries nothing proves equal to their match (b has no record of
// them, or the record differs from what the walk saw): they are read to
// know.
func matchUnchanged(x *archive.Index, b *base) (reuse, hash []int) {
	reuse = make([]int, len(x.Entries))
	if b.at == nil {
		return reuse, nil
	}
	for i, k := range b.at {
		if k == 0 {
			continue
		}
		reuse[i] = int(k)
		if !b.files[k-1].proven {
			hash = append(hash, i)
		}
	}
	return reuse, hash
}

// packLife is what the save's plan knows of a base pack: of the files of
// the walk that reuse its content, how many (files), what they take in a
// tar stream (live: their Index.TarBytes), and where the last of them
// ends in the pack's stream (end: the greatest offset plus TarBytes).
type packLife struct {
	files     int
	live, end int64
}

// livePacks returns, per pack of the base, what the files of x that reuse
// its content take of it.
func livePacks(x *archive.Index, b *base, reuse []int) []packLife {
	if b.at == nil {
		return nil
	}
	packs := make([]packLife, len(b.packs))
	for i := range x.Entries {
		if reuse[i] == 0 {
			continue
		}
		e, f := &x.Entries[i], &b.files[reuse[i]-1]
		n := x.TarBytes(e)
		l := &packs[f.pack]
		l.files++
		l.live += n
		l.end = max(l.end, f.offset+n)
	}
	return packs
}

// worthKeeping is the reuse rule: a base pack is kept when its live files
// end, in its stream, within half of what a restore may read of it
// (archive.PackBounds: twice what they take): the files before them that
// no entry names any more take at most about as many bytes as they do.
// Its other files are dead weight a restore reads past, and those after
// the last live one are not read at all. A pack past this is packed again
// from its live files. The offsets are the pack's own, kept from entry to
// entry, so a pack kept several times over is measured as it is.
func worthKeeping(l packLife) bool {
	return l.files > 0 && l.end+archive.PackSlack <= 2*(archive.PackSlack+l.live)
}

// stillStored returns, per pack of base, whether it is kept: worth keeping
// by its life (livePacks), and still in st (8 stats at once). A pack
// gone from the store is not kept (its files are packed again); a store
// that cannot say fails the save.
func stillStored(ctx context.Context, st store.Store, packs []format.Descriptor, life []packLife, logf func(string, ...any)) ([]bool, error) {
	if packs == nil {
		return nil, nil
	}
	keep := make([]bool, len(packs))
	gone := func(p int) {
		logf("base pack %s is gone from the store: its files are packed again", packs[p].Digest.Short())
	}
	// A store that answers for many blobs at once (http://) is asked once.
	if bc, ok := store.As[store.BlobChecker](st); ok {
		var ds []digest.Digest
		for p := range packs {
			if worthKeeping(life[p]) {
				ds = append(ds, packs[p].Digest)
			}
		}
		if len(ds) == 0 {
			return keep, nil
		}
		missing, err := bc.MissingBlobs(ctx, ds)
		if err != nil {
			return nil, err
		}
		lacks := make(map[digest.Digest]bool, len(missing))
		for _, d := range missing {
			lacks[d] = true
		}
		for p := range packs {
			switch {
			case !worthKeeping(life[p]):
			case lacks[packs[p].Digest]:
				gone(p)
			default:
				keep[p] = true
			}
		}
		return keep, nil
	}
	var g errgroup.Group
	g.SetLimit(8)
	for p := range packs {
		if !worthKeeping(life[p]) {
			continue
		}
		g.Go(func() error {
			if _, err := st.StatBlob(ctx, packs[p].Digest); err != nil {
				if !errors.Is(err, store.ErrNotFound) {
					return err
				}
				gone(p)
				return nil
			}
			keep[p] = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return keep, nil
}

// planPacks plans the packs of x: the base packs keep says to keep
// (renumbered from 0 in the base's order), the matches of reuse whose pack
// is kept, and the other non-empty files grouped into new packs of about
// packSize (groupFresh). It does not change x (see apply).
func planPacks(x *archive.Index, b *base, reuse []int, keep []bool, packSize int64) *packPlan {
	plan := &packPlan{reuse: make([]int, len(x.Entries))}
	if b.at != nil {
		plan.newPos = make([]int, len(b.packs))
		for p := range b.packs {
			plan.newPos[p] = -1
			if keep[p] {
				plan.newPos[p] = len(plan.kept)
				plan.kept = append(plan.kept, b.packs[p])
			}
		}
		for i, j := range reuse {
			if j != 0 && plan.newPos[b.files[j-1].pack] >= 0 {
				plan.reuse[i] = j
			}
		}
	}
	plan.fresh = groupFresh(x, plan.reuse, packSize)
	return plan
}

// groupFresh groups the non-empty files of x that reuse nothing into packs,
// in the order of x, of about equal sizes: n packs for total bytes, n the
// fewest of at most packSize each rounded up to an even number (so that two
// or four packers finish together instead of one compressing a small last
// pack alone), each cut at the file whose middle crosses its share of the
// total. A pack is also closed before a file that would take it past
// packSize (a file larger than packSize gets a pack of its own). It depends
// only on the files, never on the machine: the same tree gives the same packs.
func groupFresh(x *archive.Index, reuse []int, packSize int64) [][]int32 {
	fresh := func(i int) bool {
		e := &x.Entries[i]
		return e.Type == archive.TypeFile && e.Size > 0 && reuse[i] == 0
	}
	var total int64
	for i := range x.Entries {
		if fresh(i) {
			total += x.Entries[i].Size
		}
	}
	n := (total + packSize - 1) / packSize
	if n > 1 && n%2 == 1 {
		n++
	}
	var groups [][]int32
	var cur []int32
	var curSize, before int64 // bytes in cur, and in the packs closed
	for i := range x.Entries {
		if !fresh(i) {
			continue
		}
		e := &x.Entries[i]
		// The cut after pack k (of n) is at k+1 n-ths of the total;
		// comparing doubled sizes keeps the middle of a file exact.
		cut := 2 * (int64(len(groups)) + 1) * total / n
		if len(cur) > 0 && (curSize+e.Size > packSize || 2*(before+curSize)+e.Size > cut) {
			groups = append(groups, cur)
			before += curSize
			cur, curSize = nil, 0
		}
		cur = append(cur, int32(i)) // Save refuses a walk of more entries
		curSize += e.Size
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	return groups
}

// packFiles returns the files of one new pack (positions in x) as
// WritePack takes them.
func packFiles(x *archive.Index, folders []string, files []int32) []archive.PackFile {
	out := make([]archive.PackFile, len(files))
	for k, i := range files {
		e := &x.Entries[i]
		out[k] = archive.PackFile{Entry: e, Name: x.TarName(e), Source: filepath.Join(folders[e.Root], filepath.FromSlash(e.Path)), ID: x.IDs[i]}
	}
	return out
}

// apply makes x's packs the kept ones and gives each reusing entry its base
// entry's digest, pack (renumbered) and offset. It returns how many files
// reuse a base pack.
func (p *packPlan) apply(x *archive.Index, b *base) (reusedFiles int) {
	x.Packs = append(x.Packs, p.kept...)
	for i, j := range p.reuse {
		if j == 0 {
			continue
		}
		f, e := &b.files[j-1], &x.Entries[i]
		e.Digest, e.Pack, e.Offset = f.digest, p.newPos[f.pack], f.offset
		reusedFiles++
	}
	return reusedFiles
}

// hashFiles reads the files of x at positions hash (jobs at once) and keeps
// reuse[i] only for those whose content is the base entry's; the others are
// packed anew.
func hashFiles(ctx context.Context, x *archive.Index, folders []string, b *base, hash []int, reuse []int, jobs int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, i := range hash {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			e := &x.Entries[i]
			got, err := archive.HashFile(filepath.Join(folders[e.Root], filepath.FromSlash(e.Path)), x.IDs[i], e.Size)
			if err != nil || got != b.files[reuse[i]-1].digest {
				reuse[i] = 0 // changed, or unreadable now: packing reads it (and says why)
			}
			return nil
		})
	}
	return g.Wait()
}
