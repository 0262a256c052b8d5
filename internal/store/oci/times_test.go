package oci_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/oci"
	"github.com/tekton-cache/tekton-cache/internal/store/storetest"
)

// TestTimes: each save records its entry's Created in the times manifest,
// which ListRefInfo gives as the hint of order; a delete removes it; the
// reserved tag is never an entry; a times manifest that is not ours is no
// hint, and no error.
func TestTimes(t *testing.T) {
	host := registry(t, false)
	s := openStore(t, host)
	ctx := context.Background()
	created := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for i, k := range []string{"go-a", "go-b", "node-c"} {
		if err := s.PutRef(ctx, storetest.NewRef(t, s, k, created.Add(time.Duration(i)*time.Minute), 0)); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := s.ListRefInfo(ctx, "go-")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(infos, func(a, b store.RefInfo) int { return a.Modified.Compare(b.Modified) })
	want := []store.RefInfo{{Key: "go-a", Modified: created}, {Key: "go-b", Modified: created.Add(time.Minute)}}
	if len(infos) != 2 || infos[0].Key != want[0].Key || !infos[0].Modified.Equal(want[0].Modified) || infos[1].Key != want[1].Key || !infos[1].Modified.Equal(want[1].Modified) {
		t.Fatalf("ListRefInfo(go-) = %v, want %v", infos, want)
	}

	if err := s.DeleteRef(ctx, "go-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRef(ctx, storetest.NewRef(t, s, "go-b", created, 0)); err != nil {
		t.Fatal(err)
	}
	// Put back by a tool that does not record times: no hint for it.
	if err := s.DeleteRef(ctx, "go-b"); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(s.Repository().Tag("go-b"), empty.Image); err != nil {
		t.Fatal(err)
	}
	infos, err = s.ListRefInfo(ctx, "go-b")
	if err != nil || len(infos) != 1 || !infos[0].Modified.IsZero() {
		t.Fatalf("ListRefInfo(go-b) after a delete = %v, %v; want go-b without a time", infos, err)
	}

	keys, err := s.ListRefs(ctx, "")
	if err != nil || slices.Contains(keys, oci.TimesTag) || len(keys) != 3 {
		t.Fatalf("ListRefs = %v, %v; want the 3 entries' keys, not %s", keys, err, oci.TimesTag)
	}
	if _, err := s.GetRef(ctx, oci.TimesTag); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("GetRef(%s) = %v, want ErrInvalidKey", oci.TimesTag, err)
	}
	if err := s.PutRef(ctx, storetest.NewRef(t, s, oci.TimesTag, created, 0)); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("PutRef(%s) = %v, want ErrInvalidKey", oci.TimesTag, err)
	}
	if err := s.DeleteRef(ctx, oci.TimesTag); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("DeleteRef(%s) = %v, want ErrInvalidKey", oci.TimesTag, err)
	}

	// Another tool's image under the reserved tag: no times, no error.
	if err := remote.Write(s.Repository().Tag(oci.TimesTag), empty.Image); err != nil {
		t.Fatal(err)
	}
	infos, err = s.ListRefInfo(ctx, "go-")
	if err != nil || len(infos) != 2 || !infos[0].Modified.IsZero() || !infos[1].Modified.IsZero() {
		t.Fatalf("ListRefInfo with a foreign times manifest = %v, %v; want both keys without a time", infos, err)
	}
	// The next save replaces it.
	if err := s.PutRef(ctx, storetest.NewRef(t, s, "go-a", created, 0)); err != nil {
		t.Fatal(err)
	}
	if infos, err = s.ListRefInfo(ctx, "go-a"); err != nil || len(infos) != 1 || !infos[0].Modified.Equal(created) {
		t.Fatalf("ListRefInfo(go-a) after a save = %v, %v; want its time", infos, err)
	}
}

// TestTimesRepaired: a key the times manifest lacks (a save that lost a
// race) gets its time from the next save of any key, and a key whose tag
// is gone loses its time.
func TestTimesRepaired(t *testing.T) {
	host := registry(t, false)
	repo := newRepo(t)
	s := openRepo(t, host, repo)
	ctx := context.Background()
	created := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, k := range []string{"go-lost", "go-deleted"} {
		if err := s.PutRef(ctx, storetest.NewRef(t, s, k, created, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// Lose go-lost's time as a race would, and delete go-deleted's tag
	// behind the store's back.
	oci.SetTime(ctx, s, "go-lost", time.Time{})
	if err := remote.Delete(s.Repository().Tag("go-deleted")); err != nil {
		t.Logf("registry cannot delete a tag (%v): deleting by digest", err)
		desc, err := remote.Head(s.Repository().Tag("go-deleted"))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Delete(s.Repository().Digest(desc.Digest.String())); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRef(ctx, storetest.NewRef(t, s, "go-next", created.Add(time.Hour), 0)); err != nil {
		t.Fatal(err)
	}
	got := oci.Times(ctx, t, s)
	if !got["go-lost"].Equal(created) {
		t.Errorf("after the next save, go-lost's time is %v, want %v", got["go-lost"], created)
	}
	if _, ok := got["go-deleted"]; ok {
		t.Errorf("after the next save, go-deleted (no tag) still has a time")
	}
}
