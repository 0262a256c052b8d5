package local

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// TestPutRefSyncsStagedBlobs: staged blobs are committed without waiting
// for the disk; publishing a ref must first make them durable.
func TestPutRefSyncsStagedBlobs(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := store.NewObjectStore(b)
	ctx := context.Background()
	data := []byte("pack bytes")
	d := digest.FromBytes(data)
	sb, err := s.StageBlob(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb.Write(data)
	if err := sb.Commit(ctx, d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if len(b.unsynced) != 1 {
		t.Fatalf("%d unsynced files after a commit, want 1", len(b.unsynced))
	}
	idx := []byte("index")
	if err := s.PutBlob(ctx, digest.FromBytes(idx), int64(len(idx)), bytes.NewReader(idx)); err != nil {
		t.Fatal(err)
	}
	ref := &store.Ref{Format: format.Version, Key: "k", Index: format.Descriptor{Digest: digest.FromBytes(idx), Size: int64(len(idx))},
		Packs: []format.Descriptor{{Digest: d, Size: int64(len(data))}}, Created: time.Now()}
	if err := s.PutRef(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if len(b.unsynced) != 0 {
		t.Fatalf("%d files still unsynced after PutRef", len(b.unsynced))
	}
}
