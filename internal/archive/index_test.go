package archive

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

func zstdBlob(t *testing.T, raw string) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll([]byte(raw), nil)
}

func TestDecodeIndexRoundTrip(t *testing.T) {
	d, _ := digest.ParseSum(strings.Repeat("ab", 32))
	x := &Index{Format: format.Version, Roots: []string{"a", "b"},
		Packs: []format.Descriptor{{Digest: digest.FromBytes([]byte("p")), Size: 10}},
		Entries: []Entry{
			{Path: "d", Type: TypeDir, Mode: 0o755, MTime: 1, Pack: NoPack},
			{Path: "d/f", Type: TypeFile, Mode: 0o644, MTime: 2, Size: 3, Digest: d, Pack: 0, Offset: 512},
			{Path: "d/l", Type: TypeSymlink, Mode: 0o777, MTime: 3, Link: "f", Pack: NoPack},
			{Root: 1, Path: "e", Type: TypeFile, Mode: 0o600, MTime: 4, Pack: NoPack},
		}}
	blob, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeIndex(blob)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(x) {
		t.Fatalf("round trip changed the index:\n got %+v\nwant %+v", got, x)
	}
}

// The parser keeps encoding/json's strictness, and refuses what follows the
// index.
func TestDecodeIndexRefusesMalformed(t *testing.T) {
	ok := `{"format":1,"roots":["a"],"packs":[],"entries":[{"p":"f","t":"f","m":420,"mt":1,"k":-1}]}`
	if _, err := DecodeIndex(zstdBlob(t, ok)); err != nil {
		t.Fatalf("a valid index was refused: %v", err)
	}
	for name, raw := range map[string]string{
		"unknown field":   strings.Replace(ok, `"mt":1`, `"mt":1,"x":2`, 1),
		"data after it":   ok + `{"format":1}`,
		"wrong type":      strings.Replace(ok, `"m":420`, `"m":"420"`, 1),
		"truncated":       ok[:len(ok)-3],
		"negative mode":   strings.Replace(ok, `"m":420`, `"m":-1`, 1),
		"negative offset": strings.Replace(ok, `"k":-1`, `"k":-1,"o":-5`, 1),
		"offset, no pack": strings.Replace(ok, `"k":-1`, `"k":-1,"o":512`, 1),
		"not json at all": "PK\x03\x04",
	} {
		if _, err := DecodeIndex(zstdBlob(t, raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOffsetOutsideThePackIsRefused: a forged index (digests consistent)
// whose file claims to start past the end of what its pack can hold.
func TestOffsetOutsideThePackIsRefused(t *testing.T) {
	x := index(file("f", "content"))
	x.Packs = []format.Descriptor{{Digest: digest.FromBytes([]byte("p")), Size: 1}}
	if err := x.Validate(); err != nil {
		t.Fatalf("a valid index was refused: %v", err)
	}
	x.Entries[len(x.Entries)-1].Offset = 1 << 40
	if err := x.Validate(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "outside its pack") {
		t.Fatalf("an offset 1 TiB into a pack of one small file: %v", err)
	}
}

// An index that decompresses beyond the limit is refused before it is
// parsed, whether its frame says its size or not.
func TestDecodeIndexRefusesOversize(t *testing.T) {
	blob, err := (&Index{Format: format.Version, Roots: []string{"a"}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	defer func(old func() uint64) { maxIndexSize = old }(maxIndexSize)
	maxIndexSize = func() uint64 { return 16 }
	if _, err := DecodeIndex(blob); err == nil || !strings.Contains(err.Error(), "larger than 16 bytes") {
		t.Fatalf("got %v, want a refusal naming the limit", err)
	}
	var streamed bytes.Buffer // no content size in the frame header
	enc, _ := zstd.NewWriter(&streamed)
	enc.Write([]byte(`{"format":1,"roots":["a"],"packs":[],"entries":[]}`))
	enc.Close()
	if _, err := DecodeIndex(streamed.Bytes()); err == nil || !strings.Contains(err.Error(), "larger than 16 bytes") {
		t.Fatalf("streamed frame: got %v, want a refusal naming the limit", err)
	}
}

func TestSortOrdersByRootThenPathBytes(t *testing.T) {
	x := &Index{Entries: []Entry{
		{Root: 1, Path: "a"}, {Path: "a/b"}, {Path: "a-c"}, {Path: "a"}, {Root: 1, Path: "0"},
	}}
	x.Sort()
	var got []string
	for _, e := range x.Entries {
		got = append(got, string(rune('0'+e.Root))+":"+e.Path)
	}
	want := []string{"0:a", "0:a-c", "0:a/b", "1:0", "1:a"}
	if !slices.Equal(got, want) {
		t.Fatalf("sorted %v, want %v", got, want)
	}
}
