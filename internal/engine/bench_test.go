package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// benchTree writes a Go-cache-like tree: many small files and a few large
// ones, half compressible, about 96 MiB.
func benchTree(b *testing.B) (string, int64) {
	b.Helper()
	dir := b.TempDir()
	text := bytes.Repeat([]byte("func (x *T) Method(ctx context.Context) error { return nil }\n"), 4096)
	var total int64
	for i := range 3000 {
		size := 1<<10 + (i*7919)%(48<<10)
		if i%500 == 0 {
			size = 4 << 20
		}
		data := make([]byte, size)
		n := copy(data, text[i%1000:])
		if n < size {
			copy(data[n:], text)
		}
		rand.Read(data[:size/3])
		p := filepath.Join(dir, fmt.Sprintf("%02x", i%256), fmt.Sprintf("%05d-d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(size)
	}
	return dir, total
}

// BenchmarkFloorTarZstd is the floor for BenchmarkSave: the same tree
// through archive/tar and a multi-threaded zstd encoder at the same level,
// into io.Discard (no hashing, no store).
func BenchmarkFloorTarZstd(b *testing.B) {
	dir, total := benchTree(b)
	b.SetBytes(total)
	for b.Loop() {
		enc, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(zstd.SpeedDefault))
		tw := tar.NewWriter(enc)
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			fi, _ := d.Info()
			hdr, _ := tar.FileInfoHeader(fi, "")
			hdr.Name = p
			tw.WriteHeader(hdr)
			f, _ := os.Open(p)
			io.Copy(tw, f)
			f.Close()
			return nil
		})
		tw.Close()
		enc.Close()
	}
}

func BenchmarkSave(b *testing.B) {
	dir, total := benchTree(b)
	b.SetBytes(total)
	for i := 0; b.Loop(); i++ {
		st := memory.NewStore("bench")
		if _, err := Save(context.Background(), st, SaveOptions{Key: fmt.Sprintf("k%d", i), Folders: []string{dir}}); err != nil {
			b.Fatal(err)
		}
		os.Remove(filepath.Join(dir, ".tekton-cache-state"))
	}
}

func BenchmarkRestore(b *testing.B) {
	dir, total := benchTree(b)
	st := memory.NewStore("bench")
	if _, err := Save(context.Background(), st, SaveOptions{Key: "k", Folders: []string{dir}}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	for b.Loop() {
		dst := filepath.Join(b.TempDir(), "r")
		if _, err := Restore(context.Background(), st, RestoreOptions{Key: "k", Folders: []string{dst}}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
}

// BenchmarkFloorUnzstdUntar is the floor for BenchmarkRestore: decompress
// and extract the same tree with archive/tar, no checks.
func BenchmarkFloorUnzstdUntar(b *testing.B) {
	dir, total := benchTree(b)
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedDefault))
	tw := tar.NewWriter(enc)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, _ := os.ReadFile(p)
		tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
		return nil
	})
	tw.Close()
	enc.Close()
	b.SetBytes(total)
	for b.Loop() {
		dst := b.TempDir()
		dec, _ := zstd.NewReader(bytes.NewReader(buf.Bytes()))
		tr := tar.NewReader(dec)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			p := filepath.Join(dst, hdr.Name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			f, _ := os.Create(p)
			io.Copy(f, tr)
			f.Close()
		}
		dec.Close()
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
}
