package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestPackBombIsRefused: a pack of a few KB (its digest consistent: whoever
// writes the store can recompute it) whose tar holds a member that inflates
// to 256 MiB. Before the file the index wants, the restore refuses the pack
// once the stream passes what the index accounts for, without inflating the
// rest. After it, the restore is done when it has the file, and the rest is
// read (for the digest) but not inflated: with the same bound, inflating it
// would fail.
func TestPackBombIsRefused(t *testing.T) {
	for _, bombFirst := range []bool{true, false} {
		x := index(file("f", "wanted"))
		var raw bytes.Buffer
		tw := tar.NewWriter(&raw)
		const huge = 256 << 20
		wanted := func() {
			tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6})
			tw.Write([]byte("wanted"))
		}
		if !bombFirst {
			wanted()
		}
		tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: huge})
		// Compress the zeros as they are written: the pack stays small.
		var packed bytes.Buffer
		enc, _ := zstd.NewWriter(&packed, zstd.WithEncoderLevel(zstd.SpeedFastest))
		enc.Write(raw.Bytes())
		zeros := make([]byte, 1<<20)
		for range huge >> 20 {
			enc.Write(zeros)
		}
		if bombFirst {
			raw.Reset()
			wanted()
			tw.Close()
			enc.Write(raw.Bytes())
		}
		enc.Close()
		if packed.Len() > 1<<20 {
			t.Fatalf("the bomb is %d bytes: not a bomb", packed.Len())
		}
		bound := x.PackBounds()[0]
		cr := &countReader{r: bytes.NewReader(packed.Bytes())}
		ex, err := NewExtractor(x, []string{t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer ex.Close()
		if _, err := ex.Prepare(); err != nil {
			t.Fatal(err)
		}
		err = ReadPack(cr, bound, func(tr *tar.Reader) error { return ex.ExtractPack(0, tr) })
		if !bombFirst {
			if err != nil || cr.n != int64(packed.Len()) {
				t.Fatalf("a bomb after the wanted file: %v (read %d of %d bytes)", err, cr.n, packed.Len())
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "inflates past") {
			t.Fatalf("a pack that inflates to 256 MiB before the index's 6 bytes: %v", err)
		}
		// The decoder reads ahead a little; it must not have read the pack
		// through (which inflating the whole 256 MiB would have).
		if cr.n >= int64(packed.Len()) {
			t.Fatalf("the whole bomb was read (%d of %d bytes) before it was refused", cr.n, packed.Len())
		}
	}
}

// TestPackBoundsHoldWhatWritePackWrites: the bound is never below a real
// pack's stream, long names (PAX headers) included.
func TestPackBoundsHoldWhatWritePackWrites(t *testing.T) {
	dir := t.TempDir()
	x, err := writeTree(t, dir, map[string]string{
		"a":                                  "x",
		strings.Repeat("long/", 40) + "name": strings.Repeat("y", 1000),
		"empty":                              "",
		"b":                                  strings.Repeat("z", 513),
	})
	if err != nil {
		t.Fatal(err)
	}
	var files []PackFile
	for i := range x.Entries {
		if e := &x.Entries[i]; e.Type == TypeFile && e.Size > 0 {
			files = append(files, PackFile{Entry: e, Name: x.TarName(e), Source: dir + "/" + e.Path, ID: x.IDs[i]})
		}
	}
	var buf bytes.Buffer
	if err := WritePack(&buf, 0, files); err != nil {
		t.Fatal(err)
	}
	x.Packs = []format.Descriptor{{}}
	raw, err := zstdDecode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if bound := x.packBytes()[0]; int64(len(raw)) > bound {
		t.Fatalf("pack stream of %d bytes, bound %d", len(raw), bound)
	}
	// Each file takes at most its TarBytes from its offset, and the end
	// at most PackSlack: a save's rule for reused packs counts on it.
	for k, f := range files {
		end := int64(len(raw)) - PackSlack
		if k+1 < len(files) {
			end = files[k+1].Entry.Offset
		}
		if n := end - f.Entry.Offset; n > x.TarBytes(f.Entry) {
			t.Errorf("%s takes %d bytes of the stream, more than TarBytes %d", f.Name, n, x.TarBytes(f.Entry))
		}
	}
}

func zstdDecode(b []byte) ([]byte, error) {
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	return dec.DecodeAll(b, nil)
}

// writeTree writes files (path -> content) under dir and walks it.
func writeTree(t *testing.T, dir string, files map[string]string) (*Index, error) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	x, _, err := Walk([]string{dir})
	return x, err
}

// TestRemoveTempsNeverLeavesTheFolder: the walk reports a temporary file
// at d/.tcache-tmp-x; by the time it is removed, d is a symlink to a
// directory outside the folder holding a file of that name. Nothing outside
// goes, and a path that is not a temporary name is refused.
func TestRemoveTempsNeverLeavesTheFolder(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, TempPrefix+"x")
	if err := os.WriteFile(victim, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, TempPrefix+"top"), []byte("left by a killed run"), 0o600)
	err := RemoveTemps(dir, "d/"+TempPrefix+"x")
	if _, serr := os.Stat(victim); serr != nil {
		t.Fatalf("a file outside the folder was removed through a symlink (err %v): %v", err, serr)
	}
	if err == nil {
		t.Fatal("removing through a symlink that leaves the folder succeeded")
	}
	if _, serr := os.Lstat(filepath.Join(dir, TempPrefix+"top")); serr == nil {
		t.Fatal("the top-level leftover is still there")
	}
	if err := RemoveTemps(dir, "d"); err == nil || !strings.Contains(err.Error(), "not a temporary file") {
		t.Fatalf("removing a path that is not a temporary name: %v", err)
	}
}

// TestReadPackReadsToTheEnd: whatever fn leaves of the tar stream,
// ReadPack reads r to its end, so a verifier around r checks the whole
// pack; an error of fn is returned as it is.
func TestReadPackReadsToTheEnd(t *testing.T) {
	pack := makePack(t, tarFile{name: "a", content: strings.Repeat("a", 5000)}, tarFile{name: "b", content: "b"})
	v := digest.NewVerifier(bytes.NewReader(pack), digest.FromBytes([]byte("another pack")), int64(len(pack)))
	err := ReadPack(v, 1<<20, func(tr *tar.Reader) error {
		_, err := tr.Next() // reads one header, not the content
		return err
	})
	if !errors.Is(err, digest.ErrMismatch) {
		t.Fatalf("a pack of another digest, half read by fn: %v", err)
	}
	cr := &countReader{r: bytes.NewReader(pack)}
	if err := ReadPack(cr, 1<<20, func(*tar.Reader) error { return nil }); err != nil || cr.n != int64(len(pack)) {
		t.Fatalf("ReadPack read %d of %d bytes: %v", cr.n, len(pack), err)
	}
	errStop := errors.New("stop")
	if err := ReadPack(bytes.NewReader(pack), 1<<20, func(*tar.Reader) error { return errStop }); err != errStop {
		t.Fatalf("fn's error: %v", err)
	}
}

// TestReadPackTellsDamageFromFailure: a pack whose bytes were changed fails
// to parse before its end; ReadPack reads on to the digest check, so the
// error says damage (digest.ErrMismatch, with the parse error). A pack that
// is whole but that fn refuses gives fn's error alone.
func TestReadPackTellsDamageFromFailure(t *testing.T) {
	pack := makePack(t, tarFile{name: "a", content: strings.Repeat("a", 50000)}, tarFile{name: "b", content: "b"})
	want := digest.FromBytes(pack)
	bad := bytes.Clone(pack)
	bad[len(bad)/2] ^= 0x01
	drain := func(tr *tar.Reader) error {
		for {
			if _, err := tr.Next(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return err
			}
		}
	}
	err := ReadPack(digest.NewVerifier(bytes.NewReader(bad), want, int64(len(bad))), 1<<20, drain)
	if !errors.Is(err, digest.ErrMismatch) {
		t.Fatalf("a pack with a flipped byte: %v, want digest.ErrMismatch", err)
	}
	errStop := errors.New("refused")
	err = ReadPack(digest.NewVerifier(bytes.NewReader(pack), want, int64(len(pack))), 1<<20, func(*tar.Reader) error { return errStop })
	if err != errStop {
		t.Fatalf("a whole pack fn refuses: %v, want fn's error", err)
	}
}

// TestWritePackReadsWhatTheWalkSaw: a file is packed only when it is the
// file the walk saw and holds exactly the size it had, whatever its size
// against the copy buffer's (one read asks for a byte more than is left),
// and a path swapped for a fifo or a directory is refused without a hang.
func TestWritePackReadsWhatTheWalkSaw(t *testing.T) {
	buf := int64(len(*copyBufPool.Get().(*[]byte)))
	for _, size := range []int64{1, 511, 4096, buf - 1, buf, buf + 1, 2*buf + 7} {
		src := t.TempDir()
		content := bytes.Repeat([]byte("0123456789abcdef"), int(size/16)+1)[:size]
		p := filepath.Join(src, "f")
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		x, _, err := Walk([]string{src})
		if err != nil {
			t.Fatal(err)
		}
		e := &x.Entries[0]
		var pack bytes.Buffer
		if err := WritePack(&pack, 0, []PackFile{{Entry: e, Name: e.Path, Source: p, ID: x.IDs[0]}}); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if want := digest.SumBytes(content); e.Digest != want {
			t.Errorf("%d bytes: digest %s, want %s", size, e.Digest.Short(), want.Short())
		}
		var got []byte
		if err := ReadPack(&pack, 1<<40, func(tr *tar.Reader) error {
			if _, err := tr.Next(); err != nil {
				return err
			}
			got, err = io.ReadAll(tr)
			return err
		}); err != nil || !bytes.Equal(got, content) {
			t.Errorf("%d bytes: the pack holds %d bytes (%v)", size, len(got), err)
		}

		// The same entry, the file now a byte longer or shorter, or
		// another file in its place.
		// First, while the walk's file is there: the other file's inode
		// cannot be its.
		for _, change := range []string{"other file", "grew", "shrank", "fifo", "dir"} {
			if change == "other file" { // renamed over it: another inode, the same bytes
				other := filepath.Join(src, "other")
				if err := os.WriteFile(other, content, 0o644); err != nil {
					t.Fatal(err)
				}
				os.RemoveAll(p)
				err = os.Rename(other, p)
			} else {
				os.RemoveAll(p)
			}
			switch change {
			case "grew":
				err = os.WriteFile(p, append(content, 'x'), 0o644)
			case "shrank":
				err = os.WriteFile(p, content[:size-1], 0o644)
			case "fifo":
				err = unix.Mkfifo(p, 0o644)
			case "dir":
				err = os.Mkdir(p, 0o755)
			}
			if err != nil {
				t.Fatal(err)
			}
			e2 := *e
			err := WritePack(io.Discard, 0, []PackFile{{Entry: &e2, Name: e.Path, Source: p, ID: x.IDs[0]}})
			if !errors.Is(err, errChanged) {
				t.Errorf("%d bytes, %s: %v, want %v", size, change, err, errChanged)
			}
		}
	}
}

// TestTarBytesCountsTheTarName: in an index of several folders a file's
// tar name is "<root>/<path>"; TarBytes counts it without making it, as
// the same name taken as a path of an index of one folder.
func TestTarBytesCountsTheTarName(t *testing.T) {
	many := &Index{Roots: make([]string, 12)}
	one := &Index{Roots: []string{"r"}}
	for _, root := range []int{0, 9, 10, 11} {
		for _, p := range []string{"a", strings.Repeat("n", 435), strings.Repeat("n", 436), strings.Repeat("n", 447)} {
			e := &Entry{Root: root, Path: p, Size: 700}
			if got, want := many.TarBytes(e), one.TarBytes(&Entry{Path: many.TarName(e), Size: 700}); got != want {
				t.Errorf("root %d, path of %d bytes: %d, want %d", root, len(p), got, want)
			}
		}
	}
}

// TestHashFileOfAFifoDoesNotBlock: a fifo swapped in where the walk saw a
// file is refused; opening it to read does not wait for a writer.
func TestHashFileOfAFifoDoesNotBlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := HashFile(p, FileID{}, 5)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errChanged) {
			t.Fatalf("hashing a fifo: %v, want %v", err, errChanged)
		}
	case <-time.After(30 * time.Second): // an open that waits for a writer never returns
		t.Fatal("hashing a fifo blocked")
	}
}
