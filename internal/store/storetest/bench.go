package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// BenchBlobSize is the size of the blobs Bench moves.
const BenchBlobSize = 1 << 20

// benchRefs is how many refs ListRefs lists.
const benchRefs = 50

// Bench measures the operations of the suite on stores made by open: one
// store per sub-benchmark, each operation on BenchBlobSize blobs (with
// b.SetBytes) or small refs. StageBlob runs when store.As finds a
// BlobStager.
//
//	func BenchmarkConformance(b *testing.B) { storetest.Bench(b, func(b *testing.B) store.Store { ... }) }
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	c := context.Background()
	// blob returns BenchBlobSize bytes that differ from those of every
	// other i, and their digest, so that no put finds its blob there.
	seed, _ := RandomBlob(b, BenchBlobSize)
	blob := func(i int) ([]byte, digest.Digest) {
		data := bytes.Clone(seed)
		binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(data[8:], uint64(i))
		return data, digest.FromBytes(data)
	}
	// puts times put on a new blob per iteration, made outside the timer.
	puts := func(put func(s store.Store, data []byte, d digest.Digest) error) func(b *testing.B) {
		return func(b *testing.B) {
			s := open(b)
			b.SetBytes(BenchBlobSize)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				data, d := blob(i)
				b.StartTimer()
				if err := put(s, data, d); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("PutBlob", puts(func(s store.Store, data []byte, d digest.Digest) error {
		return s.PutBlob(c, d, BenchBlobSize, bytes.NewReader(data))
	}))
	b.Run("GetBlob", func(b *testing.B) {
		s := open(b)
		data, d := blob(0)
		PutBlob(b, s, data)
		b.SetBytes(BenchBlobSize)
		for b.Loop() {
			rc, err := s.GetBlob(c, d)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != BenchBlobSize {
				b.Fatalf("GetBlob read %d bytes, %v", n, err)
			}
		}
	})
	b.Run("StatBlob", func(b *testing.B) {
		s := open(b)
		data, d := blob(0)
		PutBlob(b, s, data)
		for b.Loop() {
			if _, err := s.StatBlob(c, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PutRef", func(b *testing.B) {
		s := open(b)
		ref := NewRef(b, s, "bench", time.Now(), 1)
		for b.Loop() {
			if err := s.PutRef(c, ref); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("GetRef", func(b *testing.B) {
		s := open(b)
		ref := NewRef(b, s, "bench", time.Now(), 1)
		if err := s.PutRef(c, ref); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.GetRef(c, ref.Key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("ListRefs%d", benchRefs), func(b *testing.B) {
		s := open(b)
		ref := NewRef(b, s, "bench", time.Now(), 1)
		for i := range benchRefs {
			r := *ref
			r.Key = fmt.Sprintf("bench-%03d", i)
			if err := s.PutRef(c, &r); err != nil {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			keys, err := s.ListRefs(c, "bench-")
			if err != nil || len(keys) != benchRefs {
				b.Fatalf("ListRefs = %d keys, %v; want %d", len(keys), err, benchRefs)
			}
		}
	})
	if !canStage(b, open(b)) {
		return
	}
	b.Run("StageBlob", puts(func(s store.Store, data []byte, d digest.Digest) error {
		sb, err := store.StageBlob(c, s)
		if err != nil {
			return err
		}
		if _, err := sb.Write(data); err != nil {
			sb.Abort()
			return err
		}
		return sb.Commit(c, d, BenchBlobSize)
	}))
}

// canStage reports whether s stages blobs: store.StageBlob finds its
// BlobStager and that does not say errors.ErrUnsupported (an object store
// over a bucket that cannot stage).
func canStage(t testing.TB, s store.Store) bool {
	t.Helper()
	sb, err := store.StageBlob(context.Background(), s)
	if errors.Is(err, errors.ErrUnsupported) {
		return false
	}
	if err != nil {
		t.Fatalf("StageBlob: %v", err)
	}
	sb.Abort()
	return true
}
