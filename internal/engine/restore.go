package engine

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	// Key is the exact key to look for first.
	Key string
	// RestoreKeys are prefixes tried in order when Key misses; the newest
	// entry whose key starts with the prefix wins.
	RestoreKeys []string
	// Folders receive the entry's folders, matched by name (see
	// store.Ref.Folders): a reordered list restores each folder into its own.
	Folders []string
	// WorkDir is what folder names are relative to ("" is the current
	// directory): the --workingdir of the save.
	WorkDir string
	// Platform is where the restore runs (default Platform()); entries saved
	// on another platform are skipped unless AnyPlatform.
	Platform    string
	AnyPlatform bool
	// LookupOnly finds and checks the entry but restores nothing.
	LookupOnly bool
	// Jobs, when set, is the number of packs downloaded and extracted at
	// once. Default: it starts at max(4, GOMAXPROCS) and grows, up to 12,
	// while the throughput grows with it (adapt.go).
	Jobs int
	// Logf receives diagnostics; nil is silent.
	Logf func(format string, args ...any)
	// Progress receives a snapshot of the downloads every ProgressEvery
	// (default 10 s); nil is silent.
	Progress      Progress
	ProgressEvery time.Duration

	adaptive bool // Jobs was not set: the downloads adapt
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Key        string
	MatchedKey string
	// Fetched: the exact key was restored. Restored: an entry was restored
	// (exact or from a restore key).
	Fetched  bool
	Restored bool
	// MissReason says why nothing was restored.
	MissReason string
	// Found: a usable entry exists (with LookupOnly, nothing was restored).
	Found bool
	// RestoreKey is the restore-key prefix that matched ("" for the exact key).
	RestoreKey string
	// Created and Platform are the restored entry's.
	Created  time.Time
	Platform string
	// Skipped says, per unusable entry that was passed over (damaged, saved
	// on another platform, holding other folders), why.
	Skipped []string
	// Extra are asked-for folders the entry does not hold: left as they were.
	Extra []string
	// Empty counts the entry's empty files (restored, never "in place").
	Empty int
	Files int
	// Present counts files that were already on disk and kept; HashedFiles
	// those of them, and of the files replaced, that had to be read to know
	// (no record of the restore state proved their content).
	Present     int
	HashedFiles int
	Bytes       int64
	// Written is the content written; Downloaded the pack bytes fetched.
	Written         int64
	Downloaded      int64
	Packs           int
	PacksDownloaded int
	Duration        time.Duration
}

func (o *RestoreOptions) defaults() {
	if o.Jobs <= 0 {
		o.Jobs, o.adaptive = max(4, runtime.GOMAXPROCS(0)), true
	}
	reportingDefaults(&o.Logf, &o.Progress, &o.ProgressEvery)
}

// Restore restores the entry of opts.Key, or of the first restore key that
// matches, into opts.Folders. A miss is not an error: the result says
// Restored=false and why. An entry that cannot be used (damaged, saved on
// another platform, holding other folders) is passed over, with a line that
// says why, for the next candidate: the restore keys, newest entry first.
// Any other failure after an entry was found leaves the folders as they
// were and returns an error.
func Restore(ctx context.Context, st store.Store, opts RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	opts.defaults()
	if opts.Platform == "" {
		opts.Platform = Platform()
	}
	res := &RestoreResult{Key: opts.Key}
	if err := store.ValidateKey(opts.Key); err != nil {
		return nil, err
	}
	for _, p := range opts.RestoreKeys {
		if err := store.ValidatePrefix(p); err != nil {
			return nil, fmt.Errorf("restore key: %w", err)
		}
	}
	if len(opts.Folders) == 0 {
		return nil, fmt.Errorf("%w to restore into", ErrNoFolders)
	}
	folders, err := checkFolders(opts.Folders)
	if err != nil {
		return nil, err
	}
	removeLeftovers(folders, nil, opts.Logf)
	r := &restorer{st: st, opts: opts, res: res, folders: folders, names: folderNames(opts.WorkDir, folders), seen: map[string]bool{}}
	done, err := r.run(ctx)
	res.Duration = time.Since(start)
	if err != nil {
		return nil, err
	}
	if !done {
		res.MissReason = r.missReason
		if len(res.Skipped) > 0 {
			res.MissReason += "; passed over: " + strings.Join(res.Skipped, "; ")
		}
	}
	return res, nil
}

// restorer tries the candidates of one Restore in order.
type restorer struct {
	st         store.Store
	opts       RestoreOptions
	res        *RestoreResult
	folders    []string
	names      []string
	seen       map[string]bool
	missReason string
}

func (r *restorer) skip(why string) {
	r.res.Skipped = append(r.res.Skipped, why)
	r.opts.Logf("%s", why)
}

func (r *restorer) run(ctx context.Context) (bool, error) {
	ref, err := r.st.GetRef(ctx, r.opts.Key)
	foreign := ""
	switch {
	case err == nil:
		if ok, err := r.try(ctx, ref, ""); ok || err != nil {
			return ok, err
		}
	case errors.Is(err, store.ErrForeign):
		foreign = " (" + err.Error() + ")"
	case !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	for _, prefix := range r.opts.RestoreKeys {
		// Read lazily, newest first: the first usable entry ends the search.
		for ref, err := range store.Candidates(ctx, r.st, prefix) {
			if errors.Is(err, store.ErrNotFound) {
				break // nothing to list (a repository not made yet)
			}
			if err != nil {
				return false, err
			}
			if ok, err := r.try(ctx, ref, prefix); ok || err != nil {
				return ok, err
			}
		}
	}
	if len(r.opts.RestoreKeys) == 0 {
		r.missReason = fmt.Sprintf("no usable entry for key %s in %s%s", r.opts.Key, r.st, foreign)
	} else {
		r.missReason = fmt.Sprintf("no usable entry for key %s%s nor any key starting with %q in %s", r.opts.Key, foreign, r.opts.RestoreKeys, r.st)
	}
	return false, nil
}

// try restores ref if it is usable. It returns false, nil when it is not
// (and says why), an error when the store failed.
func (r *restorer) try(ctx context.Context, ref *store.Ref, prefix string) (bool, error) {
	if r.seen[ref.Key] {
		return false, nil
	}
	r.seen[ref.Key] = true
	if why := platformProblem(ref, r.opts.Platform, r.opts.AnyPlatform); why != "" {
		r.skip(why)
		return false, nil
	}
	if held, byBase := entryFolders(ref, nil); held != nil {
		if _, why := mapFolders(ref.Key, held, byBase, r.names, r.folders); why != "" {
			r.skip(why)
			return false, nil
		}
	}
	damaged := func(why string) {
		r.skip(fmt.Sprintf("entry %s is damaged (%s): passed over; the next upload under this key replaces it", ref.Key, why))
	}
	if err := ref.Validate(); err != nil {
		damaged(err.Error())
		return false, nil
	}
	missing, err := checkBlobs(ctx, r.st, ref)
	if err != nil {
		return false, fmt.Errorf("checking entry %s: %w", ref.Key, err)
	}
	if missing != "" {
		damaged(missing)
		return false, nil
	}
	entry, why, err := loadIndex(ctx, r.st, ref)
	if err != nil {
		return false, err
	}
	if why != "" {
		damaged(why)
		return false, nil
	}
	held, byBase := entryFolders(ref, entry.Index)
	m, why := mapFolders(ref.Key, held, byBase, r.names, r.folders)
	if why != "" {
		r.skip(why)
		return false, nil
	}
	res := r.res
	found := func() {
		res.MatchedKey, res.RestoreKey, res.Created, res.Platform = ref.Key, prefix, ref.Created, ref.Platform
		res.Extra, res.Found, res.Fetched = m.extra, true, ref.Key == r.opts.Key && len(m.extra) == 0
	}
	if r.opts.LookupOnly {
		found()
		return true, nil
	}
	if m.moved {
		r.opts.Logf("entry %s holds folder(s) %q: restoring each by name into %q", ref.Key, held, m.dests)
	}
	for _, e := range m.extra {
		r.opts.Logf("folder %s is not in entry %s: left as it is (the next upload saves it)", e, ref.Key)
	}
	if err := r.extractEntry(ctx, entry, m.dests); err != nil {
		if isDamage(err) {
			damaged(err.Error())
			return false, nil
		}
		return false, err
	}
	found()
	res.Restored = true
	return true, nil
}

func (r *restorer) extractEntry(ctx context.Context, entry *Entry, dests []string) error {
	ref, x, res := entry.Ref, entry.Index, r.res
	ex, err := archive.NewExtractor(x, dests)
	if err != nil {
		return fmt.Errorf("entry %s: %w", ref.Key, err)
	}
	defer ex.Close()
	ex.Jobs = r.opts.Jobs
	// The blob is needed again only for the state, once the files are
	// written: a large one waits in a temporary file, not in the heap
	// (from now on: the folders' state is read and joined meanwhile).
	blob := spillIndex(entry.Blob, ref.Index.Digest)
	defer blob.close()
	if blob.file != nil {
		entry.Blob = nil
	}
	// What the folders held before: a record proves a file's content only
	// while the file is exactly as recorded; anything else is hashed.
	if prev, _ := readState(dests, entry); prev != nil {
		ex.Known = prev.known(x) // joined now: the state file is done with
		prev.close()
	}
	// On failure the folders are as they were, so is their state (its
	// records still describe them: a file we touched has a new ctime).
	if err := extract(ctx, r.st, ex, x, r.opts, res); err != nil {
		ex.Abort()
		return fmt.Errorf("restoring entry %s: %w", ref.Key, err)
	}
	if err := ex.Commit(); err != nil {
		ex.Abort()
		return fmt.Errorf("restoring entry %s: %w", ref.Key, err)
	}
	ids := ex.IDs()
	if err := writeState(dests, x, blob, ids, settle(ids), ref.Key, r.st.String(), time.Now()); err != nil {
		r.opts.Logf("warning: %v (the next save will read every file)", err)
	}
	res.Files, res.Empty = CountFiles(x)
	res.Bytes = x.TotalSize()
	res.Packs = len(x.Packs)
	res.Present = ex.Present()
	res.HashedFiles = ex.Hashed()
	res.Written = ex.Written()
	return nil
}

func extract(ctx context.Context, st store.Store, ex *archive.Extractor, x *archive.Index, opts RestoreOptions, res *RestoreResult) error {
	packs, err := ex.Prepare()
	if err != nil {
		return err
	}
	bounds := x.PackBounds()
	var downloaded atomic.Int64
	var done atomic.Int32
	var total int64
	for _, p := range packs {
		total += x.Packs[p].Size
	}
	stop := reportEvery(opts.ProgressEvery, func() {
		opts.Progress.Restoring(RestoreProgress{Downloaded: downloaded.Load(), Total: total, Done: int(done.Load()), Packs: len(packs), Written: ex.Written()})
	})
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	lo, hi := opts.Jobs, opts.Jobs // fixed by the caller
	if opts.adaptive {
		lo, hi = 1, max(hi, maxDownloads)
	}
	slots := newGate(newAdaptive(opts.Jobs, lo, hi))
	var stopped error
	for _, p := range packs {
		if stopped = slots.acquire(gctx); stopped != nil {
			break
		}
		g.Go(func() (err error) {
			info := x.Packs[p]
			var pushedBack atomic.Bool
			defer func() { slots.release(info.Size, pushedBack.Load(), err == nil) }()
			rctx := store.WithRetryNotify(gctx, func(string) { pushedBack.Store(true) })
			rc, err := st.GetBlob(rctx, info.Digest)
			if err != nil {
				return err
			}
			defer rc.Close()
			v := digest.NewVerifier(&countingReader{r: store.ContextReader(gctx, rc), n: &downloaded}, info.Digest, info.Size)
			err = archive.ReadPack(v, bounds[p], func(tr *tar.Reader) error { return ex.ExtractPack(p, tr) })
			if errors.Is(err, digest.ErrMismatch) {
				return fmt.Errorf("pack %s: %w", info.Digest.Short(), err)
			}
			if err != nil {
				return err
			}
			done.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if stopped != nil {
		return stopped
	}
	res.PacksDownloaded = len(packs)
	res.Downloaded = downloaded.Load()
	return nil
}
