package oci_test

import (
	"errors"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// TestStagedBlobChecksItsDigest: the staged blob hashes what it sends, and
// a commit under another digest is refused with digest.ErrMismatch before
// the registry is asked (which would refuse it in its own words); nothing
// is readable after it, under either digest. A registry gives no blob
// times: StatBlob's Modified is zero.
func TestStagedBlobChecksItsDigest(t *testing.T) {
	s := openStore(t, registry(t, false))
	c := t.Context()
	data, d := storetest.RandomBlob(t, 1<<20)
	_, other := storetest.RandomBlob(t, 10)
	sb, err := s.StageBlob(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Write(data); err != nil {
		t.Fatal(err)
	}
	if sb.Digest() != d || sb.Size() != int64(len(data)) {
		t.Fatalf("staged blob says %s, %d bytes; wrote %s, %d", sb.Digest().Short(), sb.Size(), d.Short(), len(data))
	}
	if err := sb.Commit(c, other, int64(len(data))); !errors.Is(err, digest.ErrMismatch) {
		t.Fatalf("Commit under another digest = %v; want digest.ErrMismatch", err)
	}
	sb.Abort() // after Commit: does nothing, and does not block
	for _, dd := range []digest.Digest{d, other} {
		if _, err := s.StatBlob(c, dd); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("blob %s after a refused commit: %v; want not found", dd.Short(), err)
		}
	}

	desc := storetest.PutBlob(t, s, data)
	info, err := s.StatBlob(c, desc.Digest)
	if err != nil || info.Size != int64(len(data)) || !info.Modified.IsZero() {
		t.Fatalf("StatBlob = %+v, %v; want %d bytes and no time", info, err, len(data))
	}
}
