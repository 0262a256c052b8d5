package engine

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// packPipeline compresses new packs (builders, jobs at once) and uploads
// the ones the store lacks (at most uploads at once, the number in flight
// adapting to the link: adapt.go), streaming: at most a few packs are held,
// in memory or spilled to temporary files.
type packPipeline struct {
	st store.Store
	// x and folders are the index whose files are packed, and its
	// folders on disk.
	x       *archive.Index
	folders []string
	jobs    int
	uploads int
	// first is the number of the first new pack in the index (the packs
	// before it are kept from the base).
	first    int
	progress Progress
	every    time.Duration
}

// pipelineResult is what a packPipeline did.
type pipelineResult struct {
	// packs are the new packs, in order (pack first+i is packs[i]).
	packs []format.Descriptor
	// uploaded counts the packs sent (not those the store had), bytes
	// their bytes.
	uploaded int
	bytes    int64
}

// builtPack is a compressed pack on its way to an uploader.
type builtPack struct {
	desc   format.Descriptor
	sp     *spool           // the pack's bytes, for PutBlob
	staged store.StagedBlob // or the pack already written into the store
}

func (b builtPack) discard() {
	if b.sp != nil {
		b.sp.Close()
	}
	if b.staged != nil {
		b.staged.Abort()
	}
}

// run packs each group of files into a pack, numbered from p.first, and
// uploads it. WritePack sets the entries' digests, packs and offsets.
func (p *packPipeline) run(ctx context.Context, groups [][]int32) (pipelineResult, error) {
	if len(groups) == 0 {
		return pipelineResult{}, nil
	}
	packs := make([]format.Descriptor, len(groups))
	size := func(files []int32) (n int64) {
		for _, i := range files {
			n += p.x.Entries[i].Size
		}
		return n
	}
	var total int64
	for _, files := range groups {
		total += size(files)
	}
	var packed, sentBytes atomic.Int64
	var sent atomic.Int32
	stop := reportEvery(p.every, func() {
		p.progress.Saving(SaveProgress{Packed: packed.Load(), Total: total, Uploaded: int(sent.Load()), Packs: len(groups), UploadedBytes: sentBytes.Load()})
	})
	defer stop()

	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan int)
	// A built pack may wait for an upload slot (a spooled pack holds at most
	// spoolMemory), so that packing does not stall behind a slow upload or
	// fsync; one more waits in the hands of the dispatcher below, which is
	// how the controller knows that a higher limit would start it.
	built := make(chan builtPack, 1)
	g.Go(func() error {
		defer close(jobs)
		for j := range groups {
			select {
			case jobs <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var builders sync.WaitGroup
	for range p.jobs {
		builders.Add(1)
		g.Go(func() error {
			defer builders.Done()
			for j := range jobs {
				b, err := p.build(gctx, p.first+j, packFiles(p.x, p.folders, groups[j]))
				if err != nil {
					return err
				}
				packs[j] = b.desc
				packed.Add(size(groups[j]))
				select {
				case built <- b:
				case <-gctx.Done():
					b.discard()
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { builders.Wait(); close(built) }()
	slots := newGate(newAdaptive(startUploads, 1, p.uploads))
	g.Go(func() error {
		for b := range built {
			if err := slots.acquire(gctx); err != nil {
				b.discard()
				return err
			}
			g.Go(func() error {
				var pushedBack atomic.Bool
				ok, err := upload(store.WithRetryNotify(gctx, func(string) { pushedBack.Store(true) }), p.st, b)
				slots.release(b.desc.Size, pushedBack.Load(), err == nil)
				if err != nil {
					return err
				}
				if ok {
					sent.Add(1)
					sentBytes.Add(b.desc.Size)
				}
				return nil
			})
		}
		return nil
	})
	err := g.Wait()
	// Drain what builders left if an upload failed.
	for b := range built {
		b.discard()
	}
	if err != nil {
		return pipelineResult{}, err
	}
	return pipelineResult{packs: packs, uploaded: int(sent.Load()), bytes: sentBytes.Load()}, nil
}

// build writes files as pack number pos: straight into the store when it
// can stage blobs of unknown digest (a directory), else into a spool.
func (p *packPipeline) build(ctx context.Context, pos int, files []archive.PackFile) (builtPack, error) {
	var b builtPack
	// Both sinks hash what is written to them.
	var sink interface {
		io.Writer
		Digest() digest.Digest
		Size() int64
	}
	staged, err := store.StageBlob(ctx, p.st)
	switch {
	case err == nil:
		b.staged, sink = staged, staged
	case !errors.Is(err, errors.ErrUnsupported):
		return builtPack{}, err
	default:
		b.sp = newSpool(spoolMemory)
		sink = b.sp
	}
	if err := archive.WritePack(sink, pos, files); err != nil {
		b.discard()
		return builtPack{}, err
	}
	b.desc = format.Descriptor{Digest: sink.Digest(), Size: sink.Size()}
	return b, nil
}

// upload sends a built pack unless the store has it, and reports whether
// it sent it.
func upload(ctx context.Context, st store.Store, b builtPack) (bool, error) {
	if b.staged == nil {
		defer b.sp.Close()
		return putIfMissing(ctx, st, b.desc, b.sp.Reader)
	}
	if _, err := st.StatBlob(ctx, b.desc.Digest); err == nil {
		b.staged.Abort()
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		b.staged.Abort()
		return false, err
	}
	return true, b.staged.Commit(ctx, b.desc.Digest, b.desc.Size)
}

// putIfMissing uploads a blob unless the store has it already (one cheap
// stat), and reports whether it sent it.
func putIfMissing(ctx context.Context, st store.Store, d format.Descriptor, open func() io.Reader) (bool, error) {
	if _, err := st.StatBlob(ctx, d.Digest); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if err := st.PutBlob(ctx, d.Digest, d.Size, open()); err != nil {
		return false, err
	}
	return true, nil
}
