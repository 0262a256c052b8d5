package engine

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// recorder keeps the snapshots it is given; reported is closed at the first.
type recorder struct {
	mu       sync.Mutex
	saves    []SaveProgress
	restores []RestoreProgress
	once     sync.Once
	reported chan struct{}
}

func newRecorder() *recorder { return &recorder{reported: make(chan struct{})} }

func (r *recorder) Saving(p SaveProgress) {
	r.mu.Lock()
	r.saves = append(r.saves, p)
	r.mu.Unlock()
	r.once.Do(func() { close(r.reported) })
}

func (r *recorder) Restoring(p RestoreProgress) {
	r.mu.Lock()
	r.restores = append(r.restores, p)
	r.mu.Unlock()
	r.once.Do(func() { close(r.reported) })
}

// waitFor blocks until r was given a snapshot (or fails after a while).
func (r *recorder) waitFor() error {
	select {
	case <-r.reported:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("no progress reported")
	}
}

// heldStore holds every pack transfer until progress was reported, so the
// report comes while bytes are moving. It has no Unwrap: the store's
// stager stays hidden, so that packs go through PutBlob.
type heldStore struct {
	store.Store
	rec   *recorder
	packs map[digest.Digest]bool // for GetBlob: which blobs are packs
}

func (h *heldStore) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	if err := h.rec.waitFor(); err != nil {
		return err
	}
	return h.Store.PutBlob(ctx, d, size, r)
}

func (h *heldStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if h.packs[d] {
		if err := h.rec.waitFor(); err != nil {
			return nil, err
		}
	}
	return h.Store.GetBlob(ctx, d)
}

// TestProgressIsReported: a save and a restore report snapshots of their
// packs to the Progress of their options, every ProgressEvery.
func TestProgressIsReported(t *testing.T) {
	ctx := context.Background()
	mem := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)

	rec := newRecorder()
	res, err := Save(ctx, &heldStore{Store: mem, rec: rec}, SaveOptions{Key: "k", Folders: []string{src}, PackSize: 1 << 10, Progress: rec, ProgressEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	first := rec.saves[0]
	if first.Packs != res.NewPacks || first.Total != res.Bytes || first.Uploaded != 0 || first.UploadedBytes != 0 || first.Packed > first.Total {
		t.Fatalf("first save snapshot %+v for %+v", first, res)
	}

	ref, err := mem.GetRef(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	packs := map[digest.Digest]bool{}
	var total int64
	for _, p := range ref.Packs {
		packs[p.Digest] = true
		total += p.Size
	}
	rec = newRecorder()
	rres, err := Restore(ctx, &heldStore{Store: mem, rec: rec, packs: packs}, RestoreOptions{Key: "k", Folders: []string{t.TempDir()}, Progress: rec, ProgressEvery: time.Millisecond})
	if err != nil || !rres.Restored {
		t.Fatalf("restore: %+v, %v", rres, err)
	}
	r := rec.restores[0]
	if r.Packs != len(ref.Packs) || r.Total != total || r.Done != 0 || r.Downloaded != 0 {
		t.Fatalf("first restore snapshot %+v (%d packs, %d bytes)", r, len(ref.Packs), total)
	}
	if len(rec.saves) != 0 {
		t.Fatalf("a restore reported saving: %+v", rec.saves)
	}
}
