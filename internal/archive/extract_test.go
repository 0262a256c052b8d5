package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

func sha(s string) digest.Sum { return digest.SumBytes([]byte(s)) }

func dir(p string) Entry { return Entry{Path: p, Type: TypeDir, Mode: 0o755, Pack: NoPack} }
func link(p, target string) Entry {
	return Entry{Path: p, Type: TypeSymlink, Mode: 0o777, Link: target, Pack: NoPack}
}
func file(p, content string) Entry {
	return Entry{Path: p, Type: TypeFile, Mode: 0o644, Size: int64(len(content)), Digest: sha(content), Pack: 0}
}

// tarFile is one member of a hand-made pack.
type tarFile struct {
	name, content string
	typ           byte
	size          int64 // header size; -1: len(content)
}

func makePack(t testing.TB, files ...tarFile) []byte {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := f.size
		if size < 0 || (size == 0 && typ == tar.TypeReg) {
			size = int64(len(f.content))
		}
		hdr := &tar.Header{Name: f.name, Typeflag: typ, Mode: 0o644, Size: size, Linkname: "/etc/passwd"}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			data := []byte(f.content)
			if int64(len(data)) > size {
				data = data[:size]
			}
			tw.Write(data)
			// Pad a short body so the stream stays readable.
			if int64(len(data)) < size {
				tw.Write(make([]byte, size-int64(len(data))))
			}
		}
	}
	tw.Close()
	enc, _ := zstd.NewWriter(nil)
	return enc.EncodeAll(raw.Bytes(), nil)
}

// extractAll runs a whole restore of x with pack into dst.
func extractAll(x *Index, pack []byte, dst string) error {
	if err := x.Validate(); err != nil {
		return err
	}
	ex, err := NewExtractor(x, []string{dst})
	if err != nil {
		return err
	}
	defer ex.Close()
	packs, err := ex.Prepare()
	if err == nil {
		for _, p := range packs {
			err = ReadPack(bytes.NewReader(pack), x.PackBounds()[p], func(tr *tar.Reader) error { return ex.ExtractPack(p, tr) })
			if err != nil {
				break
			}
		}
	}
	if err == nil {
		err = ex.Commit()
	}
	if err != nil {
		ex.Abort()
	}
	return err
}

func index(entries ...Entry) *Index {
	x := &Index{Format: format.Version, Roots: []string{"cache"}, Packs: []format.Descriptor{{Digest: digest.FromBytes(nil), Size: 1}}, Entries: entries}
	return x
}

// TestUnsafeEntriesAreRefused is the attack surface: each hostile entry is
// refused with an error that names it, and nothing lands outside the target.
func TestUnsafeEntriesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		pack    []tarFile
		wantErr string
	}{
		{"absolute path", []Entry{file("/etc/evil", "x")}, []tarFile{{name: "/etc/evil", content: "x"}}, `"/etc/evil": absolute path`},
		{"dot dot", []Entry{file("../evil", "x")}, []tarFile{{name: "../evil", content: "x"}}, `"../evil"`},
		{"dot dot inside", []Entry{dir("a"), file("a/../../evil", "x")}, nil, `"a/../../evil": path is not clean`},
		{"backslash dot dot", []Entry{file(`..\evil`, "x")}, nil, `backslash`},
		{"absolute link", []Entry{link("l", "/etc")}, nil, `"l": link to absolute path "/etc"`},
		{"link out of root", []Entry{link("l", "../outside")}, nil, `"l": link target "../outside" leaves the root`},
		{"link out through subdir", []Entry{dir("a"), link("a/l", "../../outside")}, nil, `"a/l": link target`},
		{"link chain out of root", []Entry{dir("d"), link("d/up", ".."), link("chain", "d/up/../x")}, nil, `"chain": link target "d/up/../x" leaves the root`},
		{"link loop", []Entry{link("a", "b"), link("b", "a/x")}, nil, `leaves the root`},
		{"write through link", []Entry{link("l", "."), file("l/x", "x")}, []tarFile{{name: "l/x", content: "x"}}, `"l/x": its parent "l" is not a directory`},
		{"device", []Entry{{Path: "dev", Type: "c", Mode: 0o644, Pack: NoPack}}, nil, `"dev": type "c" is not a file`},
		{"hard link", []Entry{{Path: "hl", Type: "h", Mode: 0o644, Link: "/etc/passwd", Pack: NoPack}}, nil, `"hl": type "h"`},
		{"setuid", []Entry{{Path: "su", Type: TypeFile, Mode: 0o4755, Pack: NoPack}}, nil, `"su": mode 4755`},
		{"duplicate", []Entry{file("x", "a"), file("x", "a")}, nil, `"x": listed twice`},
		{"orphan", []Entry{file("nodir/x", "a")}, nil, `"nodir/x": its parent "nodir" is not listed`},
		{"size lies in pack", []Entry{file("f", "hello")}, []tarFile{{name: "f", content: "hello, more", size: 11}}, `"f": size lies`},
		{"symlink in pack where file expected", []Entry{file("f", "hello")}, []tarFile{{name: "f", typ: tar.TypeSymlink}}, `"f": pack 0 holds it as tar type`},
		{"hardlink in pack where file expected", []Entry{file("f", "hello")}, []tarFile{{name: "f", typ: tar.TypeLink}}, `"f": pack 0 holds it as tar type`},
		{"content does not match", []Entry{file("f", "hello")}, []tarFile{{name: "f", content: "HELLO"}}, `corrupt entry: f: content sha256`},
		{"missing from pack", []Entry{file("f", "hello")}, []tarFile{{name: "other", content: "hello"}}, `pack 0 lacks 1 file(s)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			dst := filepath.Join(top, "target")
			os.Mkdir(dst, 0o755)
			err := extractAll(index(tc.entries...), makePack(t, tc.pack...), dst)
			if err == nil {
				t.Fatal("extraction succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not say %q", err, tc.wantErr)
			}
			// Nothing outside the target, nothing half-written inside it.
			entries, _ := os.ReadDir(top)
			if len(entries) != 1 || entries[0].Name() != "target" {
				t.Fatalf("something was written next to the target: %v", entries)
			}
			left, _ := os.ReadDir(dst)
			if len(left) != 0 {
				t.Fatalf("the target holds %d entries after a refused restore", len(left))
			}
			if !errors.Is(err, ErrUnsafe) && !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v wraps neither ErrUnsafe nor ErrCorrupt", err)
			}
		})
	}
}

// TestSymlinkOnDiskIsNotFollowed: a symlink already in the target where
// the entry has a directory must be replaced, never written through.
func TestSymlinkOnDiskIsNotFollowed(t *testing.T) {
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	dst := filepath.Join(top, "target")
	os.MkdirAll(outside, 0o755)
	os.MkdirAll(dst, 0o755)
	if err := os.Symlink(outside, filepath.Join(dst, "sub")); err != nil {
		t.Fatal(err)
	}
	x := index(dir("sub"), file("sub/x", "payload"))
	if err := extractAll(x, makePack(t, tarFile{name: "sub/x", content: "payload"}), dst); err != nil {
		t.Fatalf("extract: %v", err)
	}
	if left, _ := os.ReadDir(outside); len(left) != 0 {
		t.Fatalf("extraction wrote through a symlink into %s", outside)
	}
	fi, err := os.Lstat(filepath.Join(dst, "sub"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("sub is not a real directory after restore: %v, %v", fi, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "sub", "x")); string(got) != "payload" {
		t.Fatalf("sub/x = %q", got)
	}
}

// TestFileReplacesDirectoryAndBack: the index wins over what is on disk.
func TestFileReplacesDirectoryAndBack(t *testing.T) {
	dst := t.TempDir()
	os.MkdirAll(filepath.Join(dst, "was-dir", "child"), 0o755)
	os.WriteFile(filepath.Join(dst, "was-file"), []byte("x"), 0o644)
	x := index(file("was-dir", "now a file"), dir("was-file"), file("was-file/in", "in"))
	pack := makePack(t, tarFile{name: "was-dir", content: "now a file"}, tarFile{name: "was-file/in", content: "in"})
	if err := extractAll(x, pack, dst); err != nil {
		t.Fatalf("extract: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "was-dir")); string(got) != "now a file" {
		t.Fatalf("was-dir = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "was-file", "in")); string(got) != "in" {
		t.Fatalf("was-file/in = %q", got)
	}
}

func TestValidPath(t *testing.T) {
	for _, p := range []string{"a", "a/b", ".hidden", "a..b", "..a"} {
		if err := ValidPath(p); err != nil {
			t.Errorf("ValidPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", ".", "..", "/a", "a/", "a//b", "./a", "a/./b", "a/..", "../a", "a\x00b", `a\b`} {
		if ValidPath(p) == nil {
			t.Errorf("ValidPath(%q) = nil", p)
		}
	}
}
