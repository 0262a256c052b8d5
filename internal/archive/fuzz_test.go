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

// FuzzExtract: an index (as JSON) and a pack of arbitrary bytes are
// extracted into a directory; nothing may land outside it.
func FuzzExtract(f *testing.F) {
	seed := func(x *Index, files ...tarFile) {
		raw, _ := json.Marshal(x)
		f.Add(raw, makePack(&testing.T{}, files...))
	}
	seed(index(dir("a"), file("a/b", "hi")), tarFile{name: "a/b", content: "hi"})
	seed(index(file("../x", "hi")), tarFile{name: "../x", content: "hi"})
	seed(index(link("l", "."), file("l/x", "x")), tarFile{name: "l/x", content: "x"})
	seed(index(file("f", "hello")), tarFile{name: "f", content: "hello, more", size: 11})
	enc, _ := zstd.NewWriter(nil)
	f.Fuzz(func(t *testing.T, rawIndex, pack []byte) {
		var x Index
		if json.Unmarshal(rawIndex, &x) != nil || x.Validate() != nil {
			return
		}
		top := t.TempDir()
		dst := filepath.Join(top, "target")
		extractAll(&x, pack, dst) //nolint:errcheck // only the effects matter
		// Also through a real DecodeIndex round trip.
		blob := enc.EncodeAll(rawIndex, nil)
		if _, err := DecodeIndex(blob); err != nil && bytes.Contains(rawIndex, []byte("entries")) {
			_ = err
		}
		entries, _ := os.ReadDir(top)
		if len(entries) > 1 || (len(entries) == 1 && entries[0].Name() != "target") {
			t.Fatalf("extraction wrote outside its target: %v", entries)
		}
	})
}

// FuzzPackReader: any bytes as a pack, with any bound, either read as a
// tar stream or fail; never a panic, and never more than the bound
// inflated out of it.
func FuzzPackReader(f *testing.F) {
	zstdPack := func(files ...tarFile) []byte { return makePack(&testing.T{}, files...) }
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
