// Package engine saves folders into a store and restores them: the data
// flow of docs/ARCHITECTURE.md. It joins archive (the format) and store
// (where blobs live).
package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
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
	// Uploads is the most blobs uploaded at once (default 8: each holds a
	// spooled pack, up to 8 MiB of it in memory). The number in flight
	// starts at 3 and grows while the throughput grows with it (adapt.go).
	Uploads int
	// Tool is recorded in the ref (the program's version).
	Tool string
	// Inputs, recorded in the ref, say what the key was computed from.
	Inputs *store.KeyInputs
	// Logf receives diagnostics; nil is silent.
	Logf func(format string, args ...any)
	// Progress receives a snapshot of the packing and upload every
	// ProgressEvery (default 10 s); nil is silent.
	Progress      Progress
	ProgressEvery time.Duration
	// Now is the clock (default time.Now): the entry's Created and the
	// restore state's time are read from it.
	Now func() time.Time
}

// SaveResult says what a save did.
type SaveResult struct {
	Key string
	// Skipped is set when nothing was saved, and SkipReason says why.
	Skipped    bool
	SkipReason string
	// Replaced says why an entry that existed under the key was replaced
	// (damaged, or holding other folders).
	Replaced string
	// Base is where unchanged files were taken from: "state" (what restore
	// left in the folders), a key, or "" (none: every file was read).
	Base        string
	Files       int
	Bytes       int64
	ReusedFiles int
	// EmptyFiles counts the empty files among Files (nothing to read or reuse).
	EmptyFiles int
	// HashedFiles counts the files read only to check that they still hold
	// the base's content (no record proved it).
	HashedFiles int
	NewPacks    int
	ReusedPacks int
	// Uploaded counts the blobs (packs and index) sent, and their bytes.
	UploadedBlobs int
	UploadedBytes int64
	// SkippedPaths are what the walk left out (sockets, links out of the folder).
	SkippedPaths []string
	Duration     time.Duration
}

func (o *SaveOptions) defaults() {
	if o.PackSize <= 0 {
		o.PackSize = 32 << 20
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.GOMAXPROCS(0)
	}
	if o.Uploads <= 0 {
		o.Uploads = maxUploads
	}
	reportingDefaults(&o.Logf, &o.Progress, &o.ProgressEvery)
	if o.Now == nil {
		o.Now = time.Now
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
		return nil, fmt.Errorf("%w to save", ErrNoFolders)
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

	x, b, racyBefore, err := walkFolders(ctx, st, folders, opts, res)
	if err != nil {
		return nil, err
	}
	defer b.blob.close() // the state file holding the base's index, if any
	if x == nil {
		res.Duration = time.Since(start)
		return res, nil
	}
	plan, err := planSave(ctx, st, x, folders, &b, opts, res)
	if err != nil {
		return nil, err
	}
	pipe := &packPipeline{st: st, x: x, folders: folders, jobs: opts.Jobs, uploads: opts.Uploads, first: len(x.Packs), progress: opts.Progress, every: opts.ProgressEvery}
	sent, err := pipe.run(ctx, plan.fresh)
	if err != nil {
		return nil, err
	}
	x.Packs = append(x.Packs, sent.packs...)
	res.NewPacks = len(plan.fresh)
	res.UploadedBlobs, res.UploadedBytes = sent.uploaded, sent.bytes
	blob, err := publish(ctx, st, x, b, plan.same, names, opts, res)
	if err != nil {
		return nil, err
	}
	// The folders now hold exactly this entry: record it so the next save
	// in this workspace reads nothing that did not change. When the state
	// already says exactly that (same index, every record proven and equal),
	// it is left as it is: a no-op save writes nothing in the workspace.
	if !b.holds || blob.digest != b.blob.digest {
		if err := writeState(folders, x, blob, x.IDs, racyBefore, opts.Key, st.String(), opts.Now()); err != nil {
			opts.Logf("warning: %v (the next save will read every file)", err)
		}
	}
	res.Files, res.EmptyFiles = CountFiles(x)
	res.Bytes = x.TotalSize()
	res.Duration = time.Since(start)
	return res, nil
}

// walkFolders walks the folders while it finds the base (reading the
// restore state, or an index from the store), removes the tool's leftovers
// the walk found, and names the roots. It returns no index when there is
// nothing to save (res says so). racyBefore is for writeState.
func walkFolders(ctx context.Context, st store.Store, folders []string, opts SaveOptions, res *SaveResult) (x *archive.Index, b base, racyBefore int64, err error) {
	// Finding the base (reading the restore state, or an index from the
	// store) overlaps the walk.
	removeLeftovers(folders, nil, opts.Logf)
	// Records of files whose ctime is not before this time are racy: the
	// walk may have seen them just before a change in the same clock tick.
	racyBefore = archive.KernelNow()
	baseCh := make(chan base, 1)
	go func() { baseCh <- findBase(ctx, st, folders, opts) }()
	x, skipped, err := archive.Walk(folders)
	b = <-baseCh
	defer func() {
		if x == nil {
			b.blob.close() // not returned
		}
	}()
	if err != nil {
		return nil, b, 0, err
	}
	if len(x.Entries) == 0 {
		res.Skipped, res.SkipReason = true, fmt.Sprintf("nothing to save: %s empty or missing", strings.Join(opts.Folders, ", "))
		return nil, b, 0, nil
	}
	if n := int64(len(x.Entries)); n > archive.MaxIndexEntries() || n > math.MaxInt32 {
		return nil, b, 0, fmt.Errorf("folder(s) %s hold %d files, directories and links, more than an entry may (%d; CACHE_MAX_INDEX_ENTRIES raises it, up to %d): save fewer folders, or smaller ones", strings.Join(opts.Folders, ", "), n, archive.MaxIndexEntries(), math.MaxInt32)
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
	return x, b, racyBefore, nil
}

// publish uploads the index of x (unless the store has it) and then the
// ref: the entry exists from then on. It returns the encoded index, which
// is the base's when same (x is the base's index: the plan says so).
func publish(ctx context.Context, st store.Store, x *archive.Index, b base, same bool, names []string, opts SaveOptions, res *SaveResult) (indexBlob, error) {
	// Nothing changed: the base's index bytes are this entry's index.
	blob := b.blob
	if !same {
		enc, err := x.Encode()
		if err != nil {
			return indexBlob{}, err
		}
		blob = blobOf(enc)
	}
	idx := format.Descriptor{Digest: blob.digest, Size: blob.size}
	sentIndex, err := putIfMissing(ctx, st, idx, blob.reader)
	if err != nil {
		return indexBlob{}, err
	}
	if sentIndex {
		res.UploadedBlobs++
		res.UploadedBytes += idx.Size
	}
	ref := &store.Ref{
		Format:   format.Version,
		Key:      opts.Key,
		Index:    idx,
		Created:  opts.Now().UTC(),
		Tool:     opts.Tool,
		Platform: opts.Platform,
		Folders:  names,
		Inputs:   opts.Inputs,
		Packs:    slices.Clone(x.Packs),
	}
	if err := st.PutRef(ctx, ref); err != nil {
		return indexBlob{}, err
	}
	return blob, nil
}

// findBase returns the index to reuse unchanged files from: the restore
// state in the folders, if the store holds the index it names, else the
// newest entry of the base keys.
func findBase(ctx context.Context, st store.Store, folders []string, opts SaveOptions) base {
	if fs, why := readState(folders, nil); fs != nil {
		// The state is the workspace's word: its packs are reused only if
		// its index is an entry's index in this store.
		_, err := st.StatBlob(ctx, fs.Index)
		if err == nil {
			return base{name: "state of " + fs.Key, blob: fs.blob, fs: fs}
		}
		fs.close()
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
		e, err := Load(ctx, st, ref)
		if err != nil {
			opts.Logf("warning: reading base entry %s: %v", ref.Key, err)
			continue
		}
		if len(e.Index.Roots) != len(folders) {
			continue
		}
		return base{x: e.Index, blob: indexBlob{digest: ref.Index.Digest, size: int64(len(e.Blob)), bytes: e.Blob}, name: ref.Key}
	}
	return base{}
}

// planSave plans the packs of x (plan.go): it keeps the digest and pack of
// every file that holds the base's content at its path, proven by the
// restore state's record (same device, inode, ctime, size, mtime and mode)
// or else by hashing it; keeps the base packs live enough (worthKeeping)
// and present in the store; and groups the other files into new packs. x's
// packs are then the kept ones. A base whose entries do not hold together
// (base.join) is not used: every file is packed anew.
func planSave(ctx context.Context, st store.Store, x *archive.Index, folders []string, b *base, opts SaveOptions, res *SaveResult) (*packPlan, error) {
	if b.ok() {
		if err := b.join(x); err != nil {
			opts.Logf("the %s is not usable (%v): not used", b.name, err)
			*b = base{}
		}
	}
	res.Base = b.name
	reuse, hash := matchUnchanged(x, b)
	if err := hashFiles(ctx, x, folders, b, hash, reuse, opts.Jobs); err != nil {
		return nil, err
	}
	keep, err := stillStored(ctx, st, b.packs, livePacks(x, b, reuse), opts.Logf)
	if err != nil {
		return nil, err
	}
	plan := planPacks(x, b, reuse, keep, opts.PackSize)
	res.HashedFiles = len(hash)
	res.ReusedPacks = len(plan.kept)
	res.ReusedFiles = plan.apply(x, b)
	// x is now the base's index exactly when the base's entries were the
	// walk's and every file reuses its base content in a pack kept at its
	// place: the base's index bytes are then this entry's.
	plan.same = b.same && len(plan.fresh) == 0 && len(plan.kept) == len(b.packs) && res.ReusedFiles == b.contentFiles
	return plan, nil
}
