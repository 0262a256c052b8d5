package archive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	fastjson "github.com/segmentio/encoding/json"
)

// FuzzDecodeIndex: any bytes either decode to a valid index or fail; never
// a panic.
func FuzzDecodeIndex(f *testing.F) {
	good := index(dir("a"), file("a/b", "hi"), link("l", "a/b"))
	blob, _ := good.Encode()
	f.Add(blob)
	raw, _ := json.Marshal(good)
	f.Add(raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := DecodeIndex(data)
		if err == nil && x.Validate() != nil {
			t.Fatal("DecodeIndex returned an index that does not validate")
		}
	})
}

// FuzzExtract: an index (as JSON, read by DecodeIndex as a restore reads
// it) and a pack of arbitrary bytes are extracted into a directory; nothing
// may change outside it: a sentinel directory beside it, and a symlink from
// the target's parent into it, stay as they were.
func FuzzExtract(f *testing.F) {
	seed := func(x *Index, files ...tarFile) {
		raw, _ := json.Marshal(x)
		f.Add(raw, makePack(f, files...))
	}
	seed(index(dir("a"), file("a/b", "hi")), tarFile{name: "a/b", content: "hi"})
	seed(index(file("../x", "hi")), tarFile{name: "../x", content: "hi"})
	seed(index(link("l", "."), file("l/x", "x")), tarFile{name: "l/x", content: "x"})
	seed(index(link("l", "../sentinel"), file("l/x", "x")), tarFile{name: "l/x", content: "x"})
	seed(index(file("f", "hello")), tarFile{name: "f", content: "hello, more", size: 11})
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rawIndex, pack []byte) {
		x, err := DecodeIndex(enc.EncodeAll(rawIndex, nil))
		if err != nil {
			return
		}
		top := t.TempDir()
		sentinel := filepath.Join(top, "sentinel")
		if err := os.Mkdir(sentinel, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sentinel, "x"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("sentinel", filepath.Join(top, "link")); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(top, "target")
		extractAll(x, pack, dst) //nolint:errcheck // only the effects matter
		entries, err := os.ReadDir(top)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "link,sentinel,target" && strings.Join(names, ",") != "link,sentinel" {
			t.Fatalf("extraction wrote outside its target: %v", names)
		}
		inside, err := os.ReadDir(sentinel)
		if err != nil || len(inside) != 1 {
			t.Fatalf("the sentinel directory changed: %v %v", inside, err)
		}
		if data, err := os.ReadFile(filepath.Join(sentinel, "x")); err != nil || string(data) != "keep" {
			t.Fatalf("the sentinel file changed: %q %v", data, err)
		}
	})
}

// FuzzPackReader: any bytes as a pack, with any bound, either read as a
// tar stream or fail; never a panic, and never more than the bound
// inflated out of it.
func FuzzPackReader(f *testing.F) {
	zstdPack := func(files ...tarFile) []byte { return makePack(f, files...) }
	f.Add(zstdPack(tarFile{name: "a/b", content: "hi"}), int64(4096))
	f.Add(zstdPack(tarFile{name: "f", content: strings.Repeat("x", 10000)}), int64(2048))
	f.Add(zstdPack(tarFile{name: "../x", content: "hi"}, tarFile{name: "l", typ: tar.TypeSymlink}), int64(1<<20))
	f.Add([]byte{}, int64(0))
	f.Add([]byte("not zstd at all"), int64(100))
	f.Fuzz(func(t *testing.T, pack []byte, limit int64) {
		if limit < 0 || limit > 1<<24 {
			return
		}
		var inflated int64
		//nolint:errcheck // the bound is what matters
		ReadPack(bytes.NewReader(pack), limit, func(tr *tar.Reader) error {
			for {
				h, err := tr.Next()
				if err != nil {
					return nil
				}
				n, _ := io.Copy(io.Discard, io.LimitReader(tr, 1<<24))
				inflated += n
				if h.Size < 0 {
					t.Fatalf("header %q with a negative size", h.Name)
				}
			}
		})
		if inflated > limit {
			t.Fatalf("%d bytes of file content came out of a pack bounded to %d", inflated, limit)
		}
	})
}

// FuzzEntryJSON: the index writer's JSON of an entry is json.Marshal's,
// whatever its strings and numbers (the same index must give the same
// bytes as before, and as any reader of encoding/json expects).
func FuzzEntryJSON(f *testing.F) {
	f.Add(0, "a/b", "f", uint32(0o644), int64(1), int64(2), []byte("0123456789abcdef0123456789abcdef"), "", 0, int64(512))
	f.Add(-3, "a<&>\u2028\"\\\x01\xff\x7f é", "l", uint32(0), int64(-1), int64(-5), []byte{}, "../x\u2029<", -1, int64(-7))
	f.Fuzz(func(t *testing.T, root int, p, typ string, mode uint32, mtime, size int64, sum []byte, link string, pack int, offset int64) {
		e := Entry{Root: root, Path: p, Type: typ, Mode: mode, MTime: mtime, Size: size, Link: link, Pack: pack, Offset: offset}
		copy(e.Digest[:], sum)
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		got := appendEntryJSON(nil, &e)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendEntryJSON:\n%s\njson.Marshal:\n%s", got, want)
		}
		// What the writer gives, the fast reader takes back whole, unless
		// a string needed an escape (it leaves those to the reflective
		// decoder).
		var back Entry
		n := parseEntryJSON(got, &back, false)
		if n > 0 && (n != len(got) || back != e) {
			t.Fatalf("parseEntryJSON(%s) = %d, %+v; want %d, %+v", got, n, back, len(got), e)
		}
		if n == 0 && jsonPlain(p) && jsonPlain(typ) && jsonPlain(link) {
			t.Fatalf("parseEntryJSON refused the writer's %s", got)
		}
	})
}

// FuzzParseEntryJSON: whatever object parseEntryJSON takes, the reflective
// decoder the stream used before (and uses for anything else) takes the
// same bytes, as the same entry; and the stream's scanner ends that object
// where parseEntryJSON did.
func FuzzParseEntryJSON(f *testing.F) {
	f.Add([]byte(`{"p":"a/b","t":"f","m":420,"mt":1,"s":2,"d":"` + strings.Repeat("ab", 32) + `","k":0,"o":512}`))
	f.Add([]byte(`{"r":-3,"p":"","t":"l","m":0,"mt":-9223372036854775808,"l":"../x","k":-1},{"p"`))
	f.Add([]byte(`{"p":"x","t":"d","m":4294967295,"mt":9223372036854775807,"k":9223372036854775807}`))
	f.Add([]byte(`{"p":"x","t":"d","m":4294967296,"mt":0,"k":0}`))
	f.Add([]byte(`{"p":"x","t":"d","m":01,"mt":0,"k":0}`))
	f.Add([]byte(`{"p":"x","t":"d","m":1,"mt":-0,"k":0}`))
	f.Add([]byte(`{"p":"x","t":"d","m":1,"mt":2,"s":0,"k":0}`))
	f.Add([]byte(`{"p":"x\u0041","t":"d","m":1,"mt":2,"l":"","k":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, alias := range []bool{false, true} {
			var e Entry
			n := parseEntryJSON(b, &e, alias)
			if n == 0 {
				continue
			}
			var want Entry
			rest, err := fastjson.Parse(b[:n], &want, fastjson.DisallowUnknownFields)
			if err != nil || len(bytes.TrimSpace(rest)) > 0 || want != e {
				t.Fatalf("parseEntryJSON(%q) = %d, %+v; the reflective decoder: %+v, %v", b, n, e, want, err)
			}
			var std Entry
			if err := json.Unmarshal(b[:n], &std); err != nil || std != e {
				t.Fatalf("parseEntryJSON(%q) = %+v; encoding/json: %+v, %v", b, e, std, err)
			}
			s := &jsonStream{r: bytes.NewReader(b), buf: make([]byte, 0, 16)}
			if v, err := s.value(); err != nil || len(v) != n {
				t.Fatalf("parseEntryJSON(%q) took %d bytes, the scanner %d (%v)", b, n, len(v), err)
			}
		}
	})
}
