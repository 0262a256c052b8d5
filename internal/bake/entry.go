package bake

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Entry is a layer's source that is one folder of a cache entry: its
// packs are read from the store and written into the layer as they
// stream, never to a directory.
type Entry struct {
	// Name says which entry it is in messages (the key).
	Name string
	// Blobs holds the entry's packs.
	Blobs store.BlobStore
	// Index is the entry's index, decoded and validated (engine.Load).
	Index *archive.Index
	// Root is the folder's position in Index.Roots.
	Root int
}

// writeEntry writes root e.Root of the entry into s under dest: the
// folder itself, then its directories, symlinks and empty files in index
// order, then its files in the order of the packs that hold them. Every
// pack is checked against its digest and every file against the index
// (size and sha256): a damaged entry fails the bake.
func writeEntry(ctx context.Context, s *layerSet, e *Entry, dest string, fixed time.Time) error {
	x := e.Index
	if e.Root < 0 || e.Root >= len(x.Roots) {
		return fmt.Errorf("entry %s has %d folder(s): no folder #%d", e.Name, len(x.Roots), e.Root)
	}
	mtime := func(ns int64) time.Time {
		if !fixed.IsZero() {
			return fixed
		}
		return time.Unix(0, ns)
	}
	if err := checkName(dest); err != nil {
		return err
	}
	// The folder itself has no entry in the index: it gets a directory's
	// usual mode and its newest entry's time.
	var newest int64
	for i := range x.Entries {
		if x.Entries[i].Root == e.Root {
			newest = max(newest, x.Entries[i].MTime)
		}
	}
	if err := s.add(header(dest, "", tar.TypeDir, 0o755, mtime(newest), 0, ""), nil); err != nil {
		return err
	}
	byName := map[string]*archive.Entry{}
	wantPack := map[int]int{} // files wanted of each pack
	for i := range x.Entries {
		en := &x.Entries[i]
		if en.Root != e.Root {
			continue
		}
		if err := checkName(en.Path); err != nil {
			return fmt.Errorf("entry %s: %w", e.Name, err)
		}
		perm := fs.FileMode(en.Mode)
		switch {
		case en.Type == archive.TypeDir:
			err := s.add(header(dest, en.Path, tar.TypeDir, perm, mtime(en.MTime), 0, ""), nil)
			if err != nil {
				return err
			}
		case en.Type == archive.TypeSymlink:
			if err := checkLink(en.Path, en.Link); err != nil {
				return fmt.Errorf("entry %s: %w", e.Name, err)
			}
			if err := s.add(header(dest, en.Path, tar.TypeSymlink, 0, mtime(en.MTime), 0, en.Link), nil); err != nil {
				return err
			}
		case en.Type == archive.TypeFile && en.Size == 0:
			if err := s.add(header(dest, en.Path, tar.TypeReg, perm, mtime(en.MTime), 0, ""), nil); err != nil {
				return err
			}
		case en.Type == archive.TypeFile:
			byName[x.TarName(en)] = en
			wantPack[en.Pack]++
		}
	}
	bounds := x.PackBounds()
	for p := range x.Packs {
		if wantPack[p] == 0 {
			continue
		}
		if err := readPack(ctx, s, e, p, bounds[p], wantPack[p], byName, dest, mtime); err != nil {
			return err
		}
	}
	for name := range byName {
		return fmt.Errorf("entry %s: %s is in no pack it names: %w", e.Name, name, archive.ErrCorrupt)
	}
	return nil
}

// readPack streams pack p and writes the files of byName it holds,
// removing them from byName.
func readPack(ctx context.Context, s *layerSet, e *Entry, p int, bound int64, wanted int, byName map[string]*archive.Entry, dest string, mtime func(int64) time.Time) error {
	d := e.Index.Packs[p]
	rc, err := e.Blobs.GetBlob(ctx, d.Digest)
	if err != nil {
		return fmt.Errorf("entry %s: pack %s: %w", e.Name, d.Digest.Short(), err)
	}
	defer rc.Close()
	v := digest.NewVerifier(store.ContextReader(ctx, rc), d.Digest, d.Size)
	h := sha256.New()
	err = archive.ReadPack(v, bound, func(tr *tar.Reader) error {
		// Done at the last file wanted: what follows may be files no
		// entry names any more, which the bound does not count.
		for wanted > 0 {
			th, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: %v", archive.ErrCorrupt, err)
			}
			en, ok := byName[th.Name]
			if !ok || en.Pack != p {
				continue // another folder's, or not in this pack per the index
			}
			if th.Size != en.Size {
				return fmt.Errorf("%w: %s has %d bytes in its pack, %d in the index", archive.ErrCorrupt, th.Name, th.Size, en.Size)
			}
			delete(byName, th.Name)
			wanted--
			h.Reset()
			hdr := header(dest, en.Path, tar.TypeReg, fs.FileMode(en.Mode), mtime(en.MTime), en.Size, "")
			if err := s.add(hdr, io.TeeReader(tr, h)); err != nil {
				return err
			}
			if got := digest.SumOf(h); got != en.Digest {
				return fmt.Errorf("%w: %s: content sha256 %s, the index says %s", digest.ErrMismatch, en.Path, got, en.Digest)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("entry %s: pack %s: %w", e.Name, d.Digest.Short(), err)
	}
	return nil
}
