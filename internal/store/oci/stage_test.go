package oci_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// TestStagedBlobs: a blob streamed to the registry before its digest is
// known lands under that digest; an aborted one, or one whose digest or
// size lies, does not.
func TestStagedBlobs(t *testing.T) {
	s := openStore(t, registry(t, false))
	c := context.Background()
	data, d := storetest.RandomBlob(t, 3<<20)
	stage := func(payload []byte) store.StagedBlob {
		t.Helper()
		sb, err := s.StageBlob(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sb.Write(payload); err != nil {
			t.Fatal(err)
		}
		return sb
	}

	stage(data).Abort()
	if _, err := s.StatBlob(c, d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("aborted blob: %v", err)
	}
	if err := stage(data).Commit(c, d, int64(len(data))+1); err == nil {
		t.Fatal("a commit whose size lies succeeded")
	}
	_, other := storetest.RandomBlob(t, 10)
	if err := stage(data).Commit(c, other, int64(len(data))); err == nil {
		t.Fatal("a commit whose digest lies succeeded")
	}
	if _, err := s.StatBlob(c, other); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("blob with a lying digest is visible: %v", err)
	}

	if err := stage(data).Commit(c, d, int64(len(data))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	rc, err := s.GetBlob(c, d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(digest.NewVerifier(rc, d, int64(len(data))))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("staged blob read back: %d bytes, %v", len(got), err)
	}
}
