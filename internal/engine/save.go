// Package engine saves folders into a store and restores them: the data
// flow of docs/ARCHITECTURE.md. It joins archive (the format) and store
// (where blobs live).
package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// SaveOptions say what to save and how.
type SaveOptions struct {
	// Key is the full cache key (no {{hash}} left).
	Key string
	// Folders are the directories to save, in order.
	Folders []string
	// BaseKeys are restore-key prefixes used to find the entry to build on
	// when the folders hold no restore state.
	BaseKeys []string
	// Force saves even when Key already exists. Without it, an existing
	// entry is kept when it is whole and holds the same folders, and replaced
	// otherwise (SaveResult.Replaced says why).
	Force bool
	// WorkDir is what the folder names recorded in the entry are relative
	// to ("" is the current directory).
	WorkDir string
	// Platform is recorded in the entry (default Platform()). An entry
	// saved on another platform under the same key is not replaced unless
	// AnyPlatform.
	Platform    string
	AnyPlatform bool
	// PackSize is the target uncompressed size of a pack. Default 32 MiB.
	PackSize int64
	// Jobs is the number of packs compressed at once. Default GOMAXPROCS.
	Jobs int
	// Uploads is the number of blobs uploaded at once. Default 3.
	Uploads int
	// Tool is recorded in the ref (the program's version).
	Tool string
	// Inputs, recorded in the ref, say what the key was computed from.
	Inputs *store.KeyInputs
	// Logf receives progress and diagnostics; nil is silent.
	Logf func(format string, args ...any)
	// Progress is how often progress lines are printed. Default 10 s.
	Progress time.Duration
}

// SaveResult says what a save did.
type SaveResult struct {
	Key string `json:"key"`
	// Skipped is set when nothing was saved, and SkipReason says why.
	Skipped    bool   `json:"skipped"`
	SkipReason string `json:"skip_reason,omitempty"`
	// Replaced says why an entry that existed under the key was replaced
	// (damaged, or holding other folders).
	Replaced string `json:"replaced,omitempty"`
	// Base is where unchanged files were taken from: "state" (what restore
	// left in the folders), a key, or "" (none: every file was read).
	Base        string `json:"base,omitempty"`
	Files       int    `json:"files"`
	Bytes       int64  `json:"bytes"`
	ReusedFiles int    `json:"reused_files"`
	// HashedFiles counts the files read only to check that they still hold
	// the base's content (no record proved it).
	HashedFiles int `json:"hashed_files"`
	NewPacks    int `json:"new_packs"`
	ReusedPacks int `json:"reused_packs"`
	// Uploaded counts the blobs (packs and index) sent, and their bytes.
	UploadedBlobs int   `json:"uploaded_blobs"`
	UploadedBytes int64 `json:"uploaded_bytes"`
	// SkippedPaths are what the walk left out (sockets, links out of the folder).
	SkippedPaths []string      `json:"skipped_paths,omitempty"`
	Duration     time.Duration `json:"-"`
}

func (o *SaveOptions) defaults() {
	if o.PackSize <= 0 {
		o.PackSize = 32 << 20
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.GOMAXPROCS(0)
	}
	if o.Uploads <= 0 {
		o.Uploads = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Progress <= 0 {
		o.Progress = 10 * time.Second
	}
}

// spoolMemory is how much of a compressed pack is kept in memory before it
// spills to a temporary file.
const spoolMemory = 8 << 20

// Save saves the folders under opts.Key. It reads only files that changed
// since the base entry, uploads only blobs the store lacks, and publishes the
// ref last.
func Save(ctx context.Context, st store.Store, opts SaveOptions) (*SaveResult, error) {
	start := time.Now()
	opts.defaults()
	res := &SaveResult{Key: opts.Key}
	if err := store.ValidateKey(opts.Key); err != nil {
		return nil, err
	}
	if len(opts.Folders) == 0 {
		return nil, fmt.Errorf("%w: no folder to save: pass --folder", ErrConfig)
	}
	folders, err := checkFolders(opts.Folders)
	if err != nil {
		return nil, err
	}
	if opts.Platform == "" {
		opts.Platform = Platform()
	}
	names := folderNames(opts.WorkDir, folders)
	if !opts.Force {
		skip, err := keepExisting(ctx, st, opts, names, res)
		if err != nil {
			return nil, err
		}
		if skip {
			res.Duration = time.Since(start)
			return res, nil
		}
	}

	// Finding the base (reading the restore state, or an index from the
	// store) overlaps the walk.
	removeLeftovers(folders, nil, opts.Logf)
	// Records of files whose ctime is not before this time are racy: the
	// walk may have seen them just before a change in the same clock tick.
	racyBefore := archive.KernelNow()
	baseCh := make(chan base, 1)
	go func() { baseCh <- findBase(ctx, st, folders, opts) }()
	x, skipped, err := archive.Walk(folders)
	b := <-baseCh
	if err != nil {
		return nil, err
	}
	if len(x.Entries) == 0 {
		res.Skipped, res.SkipReason = true, fmt.Sprintf("nothing to save: %s empty or missing", strings.Join(opts.Folders, ", "))
		res.Duration = time.Since(start)
		return res, nil
	}
	temps := map[int][]string{}
	for _, s := range skipped {
		if s.Temp {
			temps[s.Root] = append(temps[s.Root], s.Rel)
			continue
		}
		res.SkippedPaths = append(res.SkippedPaths, s.Path)
		opts.Logf("skipping %s: %s", s.Path, s.Reason)
	}
	if len(temps) > 0 {
		removeLeftovers(folders, temps, opts.Logf)
	}
	// Roots are informational: folder names, not paths, so that the same
	// cache saved from another workspace path gives the same index.
	for i, f := range folders {
		x.Roots[i] = filepath.Base(f)
	}

	res.Base = b.name
	plan, err := planPacks(ctx, st, x, folders, b, opts, res)
	if err != nil {
		return nil, err
	}
	if err := buildAndUpload(ctx, st, x, plan, opts, res); err != nil {
		return nil, err
	}

	// Nothing changed: the base's index bytes are this entry's index.
	blob := b.blob
	if b.x == nil || len(plan.fresh) > 0 || !x.Equal(b.x) {
		if blob, err = x.Encode(); err != nil {
			return nil, err
		}
	}
	idx := format.Descriptor{Digest: digest.FromBytes(blob), Size: int64(len(blob))}
	sent, err := putIfMissing(ctx, st, idx, func() io.Reader { return bytes.NewReader(blob) })
	if err != nil {
		return nil, err
	}
	if sent {
		res.UploadedBlobs++
		res.UploadedBytes += idx.Size
	}
	ref := &store.Ref{
		Format:   format.Version,
		Key:      opts.Key,
		Index:    idx,
		Created:  time.Now().UTC(),
		Tool:     opts.Tool,
		Platform: opts.Platform,
		Folders:  names,
		Inputs:   opts.Inputs,
		Packs:    slices.Clone(x.Packs),
	}
	if err := st.PutRef(ctx, ref); err != nil {
		return nil, err
	}
	// The folders now hold exactly this entry: record it so the next save
	// in this workspace reads nothing that did not change. When the state
	// already says exactly that (same index, every record proven and equal),
	// it is left as it is: a no-op save writes nothing in the workspace.
	if !stateHolds(b, x, blob) {
		if err := writeState(folders, x, blob, x.IDs, racyBefore, opts.Key, st.String()); err != nil {
			opts.Logf("warning: %v (the next save will read every file)", err)
		}
	}
	for i := range x.Entries {
		if x.Entries[i].Type == archive.TypeFile {
			res.Files++
			res.Bytes += x.Entries[i].Size
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// base is the entry a save reuses unchanged files from.
type base struct {
	x    *archive.Index
	blob []byte // x, encoded
	name string
	// ids, parallel to x.Entries, are the records of the restore state
	// (nil for a base found by restore key: every file is then hashed).
	ids []archive.FileID
}

// findBase returns the index to reuse unchanged files from: the restore
// state in the folders, if the store holds the index it names, else the
// newest entry of the base keys.
func findBase(ctx context.Context, st store.Store, folders []string, opts SaveOptions) base {
	if fs, why := readState(folders); fs != nil {
		// The state is the workspace's word: its packs are reused only if
		// its index is an entry's index in this store.
		_, err := st.StatBlob(ctx, fs.Index)
		if err == nil {
			return base{fs.X, fs.Blob, "state of " + fs.Key, fs.IDs}
		}
		if errors.Is(err, store.ErrNotFound) {
			opts.Logf("the restore state in the folders is of %s, whose index is not in %s: not used", fs.Key, st)
		} else {
			opts.Logf("warning: checking the restore state's index in %s: %v", st, err)
		}
	} else if why != "" && !strings.HasPrefix(why, "no restore state") {
		opts.Logf("%s: not used", why)
	}
	for _, prefix := range opts.BaseKeys {
		ref, err := store.Newest(ctx, st, prefix)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				opts.Logf("warning: finding a base entry for restore key %q: %v", prefix, err)
			}
			continue
		}
		blob, err := fetchIndexBlob(ctx, st, ref)
		var x *archive.Index
		if err == nil {
			x, err = indexFromBlob(ref, blob)
		}
		if err != nil {
			opts.Logf("warning: reading base entry %s: %v", ref.Key, err)
			continue
		}
		if len(x.Roots) != len(folders) {
			continue
		}
		return base{x: x, blob: blob, name: ref.Key}
	}
	return base{}
}

// stateHolds reports whether the restore state b came from already
// records x (encoded as blob) with the identities the walk saw.
func stateHolds(b base, x *archive.Index, blob []byte) bool {
	if b.ids == nil || !bytes.Equal(blob, b.blob) || len(b.ids) != len(x.Entries) || len(x.IDs) != len(x.Entries) {
		return false
	}
	for i := range x.Entries {
		if hasContent(&x.Entries[i]) && (b.ids[i].IsZero() || b.ids[i] != x.IDs[i]) {
			return false
		}
	}
	return true
}

// packPlan lists the packs reused from the base and the files to pack anew.
type packPlan struct {
	fresh [][]archive.PackFile // new packs, in order
}

// planPacks reuses the digest and pack of every file that holds the base's
// content at its path: proven by the restore state's record (same device,
// inode, ctime, size, mtime and mode), else by hashing it. It keeps base
// packs that are still mostly live (and present in the store), and groups
// the other files into new packs.
func planPacks(ctx context.Context, st store.Store, x *archive.Index, folders []string, bs base, opts SaveOptions, res *SaveResult) (*packPlan, error) {
	type key struct {
		root int
		path string
	}
	base := bs.x
	reuse := make([]int, len(x.Entries)) // base entry index + 1, or 0
	if base != nil {
		byPath := make(map[key]int, len(base.Entries))
		for i := range base.Entries {
			if e := &base.Entries[i]; e.Type == archive.TypeFile && e.Pack >= 0 {
				byPath[key{e.Root, e.Path}] = i
			}
		}
		total := make([]int64, len(base.Packs))
		for i := range base.Entries {
			if e := &base.Entries[i]; e.Pack >= 0 {
				total[e.Pack] += e.Size
			}
		}
		var hash []int // entries to read: same path and size, nothing proves the content
		for i := range x.Entries {
			e := &x.Entries[i]
			if e.Type != archive.TypeFile || e.Size == 0 {
				continue
			}
			j, ok := byPath[key{e.Root, e.Path}]
			if !ok || base.Entries[j].Size != e.Size {
				continue
			}
			reuse[i] = j + 1
			if bs.ids == nil || !proven(bs.ids[j], x.IDs[i], e, &base.Entries[j]) {
				hash = append(hash, i)
			}
		}
		if err := hashFiles(ctx, x, folders, base, hash, reuse, opts.Jobs); err != nil {
			return nil, err
		}
		res.HashedFiles = len(hash)
		live := make([]int64, len(base.Packs))
		for i := range x.Entries {
			if reuse[i] != 0 {
				live[base.Entries[reuse[i]-1].Pack] += x.Entries[i].Size
			}
		}
		// A pack less than half live is rewritten, so that restore never
		// downloads much it throws away; the others must still be in the store.
		keep := make([]bool, len(base.Packs))
		var g errgroup.Group
		g.SetLimit(8)
		for p := range base.Packs {
			if live[p] == 0 || live[p]*2 < total[p] {
				continue
			}
			g.Go(func() error {
				if _, err := st.StatBlob(ctx, base.Packs[p].Digest); err != nil {
					if !errors.Is(err, store.ErrNotFound) {
						return err
					}
					opts.Logf("base pack %s is gone from the store: its files are packed again", base.Packs[p].Digest.Short())
					return nil
				}
				keep[p] = true
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		newPos := make([]int, len(base.Packs))
		for p := range base.Packs {
			newPos[p] = -1
			if keep[p] {
				newPos[p] = len(x.Packs)
				x.Packs = append(x.Packs, base.Packs[p])
				res.ReusedPacks++
			}
		}
		for i := range x.Entries {
			if reuse[i] == 0 {
				continue
			}
			b := &base.Entries[reuse[i]-1]
			if newPos[b.Pack] < 0 {
				reuse[i] = 0
				continue
			}
			e := &x.Entries[i]
			e.Digest, e.Pack, e.Offset = b.Digest, newPos[b.Pack], b.Offset
			res.ReusedFiles++
		}
	}
	plan := &packPlan{}
	var cur []archive.PackFile
	var curSize int64
	for i := range x.Entries {
		e := &x.Entries[i]
		if e.Type != archive.TypeFile || e.Size == 0 || reuse[i] != 0 {
			continue
		}
		if len(cur) > 0 && curSize+e.Size > opts.PackSize {
			plan.fresh = append(plan.fresh, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, archive.PackFile{Entry: e, Name: x.TarName(e), Source: filepath.Join(folders[e.Root], filepath.FromSlash(e.Path)), ID: x.IDs[i]})
		curSize += e.Size
	}
	if len(cur) > 0 {
		plan.fresh = append(plan.fresh, cur)
	}
	return plan, nil
}

// hashFiles reads the files of x at positions hash (jobs at once) and keeps
// reuse[i] only for those whose content is the base entry's; the others are
// packed anew.
func hashFiles(ctx context.Context, x *archive.Index, folders []string, base *archive.Index, hash []int, reuse []int, jobs int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, i := range hash {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			e := &x.Entries[i]
			got, err := archive.HashFile(filepath.Join(folders[e.Root], filepath.FromSlash(e.Path)), x.IDs[i], e.Size)
			if err != nil || got != base.Entries[reuse[i]-1].Digest {
				reuse[i] = 0 // changed, or unreadable now: packing reads it (and says why)
			}
			return nil
		})
	}
	return g.Wait()
}

type builtPack struct {
	pos    int
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

// newPackSink returns where a pack is written: straight into the store when
// it can stage blobs of unknown digest (a directory), else a spool.
func newPackSink(ctx context.Context, st store.Store) (io.Writer, builtPack, error) {
	if bs, ok := store.As[store.BlobStager](st); ok {
		staged, err := bs.StageBlob(ctx)
		if err == nil {
			return staged, builtPack{staged: staged}, nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return nil, builtPack{}, err
		}
	}
	sp := newSpool(spoolMemory)
	return sp, builtPack{sp: sp}, nil
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

// buildAndUpload compresses the new packs (opts.Jobs at once) and uploads
// the ones the store lacks (opts.Uploads at once), streaming: at most a few
// packs are held, in memory or spilled to temporary files.
func buildAndUpload(ctx context.Context, st store.Store, x *archive.Index, plan *packPlan, opts SaveOptions, res *SaveResult) error {
	if len(plan.fresh) == 0 {
		return nil
	}
	first := len(x.Packs)
	x.Packs = append(x.Packs, make([]format.Descriptor, len(plan.fresh))...)
	res.NewPacks = len(plan.fresh)
	var total int64
	for _, files := range plan.fresh {
		for _, f := range files {
			total += f.Entry.Size
		}
	}
	var packed, sentBytes atomic.Int64
	var sentBlobs atomic.Int32
	stop := progress(opts.Logf, opts.Progress, func() string {
		return fmt.Sprintf("saving: packed %s of %s, uploaded %d/%d packs (%s)", HumanBytes(packed.Load()), HumanBytes(total), sentBlobs.Load(), len(plan.fresh), HumanBytes(sentBytes.Load()))
	})
	defer stop()

	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan int)
	// A few built packs may wait for an uploader (a spooled pack holds at most
	// spoolMemory), so that packing does not stall behind a slow upload or fsync.
	built := make(chan builtPack, opts.Uploads)
	g.Go(func() error {
		defer close(jobs)
		for j := range plan.fresh {
			select {
			case jobs <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var builders sync.WaitGroup
	for range opts.Jobs {
		builders.Add(1)
		g.Go(func() error {
			defer builders.Done()
			for j := range jobs {
				sink, b, err := newPackSink(gctx, st)
				if err != nil {
					return err
				}
				dg := digest.NewDigester()
				if err := archive.WritePack(io.MultiWriter(sink, dg), first+j, plan.fresh[j]); err != nil {
					b.discard()
					return err
				}
				for _, f := range plan.fresh[j] {
					packed.Add(f.Entry.Size)
				}
				b.pos, b.desc = first+j, format.Descriptor{Digest: dg.Digest(), Size: dg.Size()}
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
	for range opts.Uploads {
		g.Go(func() error {
			for b := range built {
				x.Packs[b.pos] = b.desc
				sent, err := upload(gctx, st, b)
				if err != nil {
					return err
				}
				if sent {
					sentBlobs.Add(1)
					sentBytes.Add(b.desc.Size)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	// Drain what builders left if an upload failed.
	for b := range built {
		b.discard()
	}
	if err != nil {
		return err
	}
	res.UploadedBlobs += int(sentBlobs.Load())
	res.UploadedBytes += sentBytes.Load()
	return nil
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
