package engine

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// failingGets fails every GetBlob as a store that cannot answer does.
type failingGets struct{ store.Store }

var errUnreachable = errors.New("connection refused")

func (failingGets) GetBlob(context.Context, digest.Digest) (io.ReadCloser, error) {
	return nil, errUnreachable
}

// TestLoad: Load gives the entry's index and its bytes; a broken entry
// gives an error wrapping ErrDamaged (with the words restore has always
// shown), a store that cannot answer an error that does not.
func TestLoad(t *testing.T) {
	ctx := context.Background()
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	ref, err := st.GetRef(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	e, err := Load(ctx, st, ref)
	if err != nil {
		t.Fatal(err)
	}
	if e.Ref != ref || digest.FromBytes(e.Blob) != ref.Index.Digest || !slices.Equal(e.Index.Packs, ref.Packs) || len(e.Index.Entries) == 0 {
		t.Fatalf("Load gave %+v for %+v", e, ref)
	}

	otherPacks := *ref
	otherPacks.Packs = append(slices.Clone(ref.Packs), format.Descriptor{Digest: digest.FromBytes([]byte("x")), Size: 1})
	swapped := *ref
	swapped.Packs = slices.Clone(ref.Packs)
	swapped.Packs[0].Size++
	missing := *ref
	missing.Index = format.Descriptor{Digest: digest.FromBytes([]byte("gone")), Size: 4}
	wrongSize := *ref
	wrongSize.Index.Size++
	for _, tc := range []struct {
		name string
		ref  *store.Ref
		want string
	}{
		{"ref lists more packs", &otherPacks, "the ref lists"},
		{"ref lists another pack", &swapped, "pack 0 differs between ref and index"},
		{"index missing", &missing, "entry k"},
		{"index of another size", &wrongSize, "digest mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(ctx, st, tc.ref)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), ErrDamaged.Error()) {
				t.Fatalf("Load: %v; want ErrDamaged, saying %q (and not %q)", err, tc.want, ErrDamaged)
			}
		})
	}
	t.Run("store cannot answer", func(t *testing.T) {
		_, err := Load(ctx, failingGets{st}, ref)
		if !errors.Is(err, errUnreachable) || errors.Is(err, ErrDamaged) {
			t.Fatalf("Load: %v; want the store's error, not ErrDamaged", err)
		}
	})
}

// TestList: every entry under the prefix, newest first, ties by key
// (descending, as restore keys pick); none is not an error.
func TestList(t *testing.T) {
	ctx := context.Background()
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range []struct {
		key string
		at  time.Duration
	}{{"go-a", 0}, {"go-b", time.Hour}, {"go-c", time.Hour}, {"py-a", 2 * time.Hour}} {
		saveWith(t, st, SaveOptions{Key: e.key, Folders: []string{src}, Force: true, Now: func() time.Time { return t0.Add(e.at) }})
	}
	refs, err := List(ctx, st, "go-")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range refs {
		keys = append(keys, r.Key)
	}
	if want := []string{"go-c", "go-b", "go-a"}; !slices.Equal(keys, want) {
		t.Fatalf("List(go-) = %q, want %q", keys, want)
	}
	if refs, err := List(ctx, st, "rust-"); err != nil || len(refs) != 0 {
		t.Fatalf("List(rust-) = %v, %v; want none and no error", refs, err)
	}
}
