package archive

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/format"
)

// manyEntries is an index of n files in nested directories, with paths as
// long as a Go build cache's.
func manyEntries(n int) *Index {
	x := &Index{Format: format.Version, Roots: []string{"cache"}}
	x.Packs = index().Packs
	dirs := map[string]bool{}
	for i := range n {
		d := fmt.Sprintf("%02x", i%256)
		if !dirs[d] {
			dirs[d] = true
			x.Entries = append(x.Entries, dir(d))
		}
		e := file(fmt.Sprintf("%s/%064x-d", d, i), "")
		e.Size, e.Digest, e.Pack, e.MTime = int64(i)+1, sha(fmt.Sprint(i)), 0, 1700000000000000000+int64(i)
		x.Entries = append(x.Entries, e)
	}
	x.Sort()
	return x
}

func withMaxEntries(t *testing.T, n int64) {
	old := MaxIndexEntries()
	SetMaxIndexEntries(n)
	t.Cleanup(func() { SetMaxIndexEntries(old) })
}

// TestDecodeIndexCapsEntries: an index past the cap on entries is refused
// with one line naming the cap and how to raise it; one at the cap decodes.
func TestDecodeIndexCapsEntries(t *testing.T) {
	x := manyEntries(1000)
	blob, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	withMaxEntries(t, int64(len(x.Entries)))
	if _, err := DecodeIndex(blob); err != nil {
		t.Fatalf("an index at the cap was refused: %v", err)
	}
	withMaxEntries(t, int64(len(x.Entries))-1)
	_, err = DecodeIndex(blob)
	if !errors.Is(err, ErrIndexTooLarge) || !strings.Contains(err.Error(), "CACHE_MAX_INDEX_ENTRIES") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("an index past the cap: got %v, want a one-line refusal naming CACHE_MAX_INDEX_ENTRIES", err)
	}
}

// TestDecodeIndexCountsBeforeParsing: a forged index of many tiny entries
// (well inside the size bound) is refused by counting its objects, even
// with its keys escaped; braces inside strings do not count.
func TestDecodeIndexCountsBeforeParsing(t *testing.T) {
	withMaxEntries(t, 1000)
	forge := func(n int, entry string) []byte {
		var b strings.Builder
		b.WriteString(`{"format":1,"roots":["c"],"packs":[],"entries":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, entry, i)
		}
		b.WriteString("]}")
		return zstdBlob(t, b.String())
	}
	for name, entry := range map[string]string{
		"plain":        `{"p":"d%d","t":"d","m":493,"mt":0,"k":-1}`,
		"escaped keys": `{"\u0070":"d%d","\u0074":"d","m":493,"mt":0,"k":-1}`,
	} {
		_, err := DecodeIndex(forge(20000, entry))
		if !errors.Is(err, ErrIndexTooLarge) || !strings.Contains(err.Error(), "objects") {
			t.Errorf("%s: 20,000 entries with a cap of 1,000: got %v, want a refusal before parsing", name, err)
		}
	}
	// Paths full of braces: 900 entries, 9,000 braces in strings.
	if _, err := DecodeIndex(forge(900, `{"p":"{{{{{}}}}}{{{{{%d","t":"d","m":493,"mt":0,"k":-1}`)); err != nil {
		t.Errorf("braces inside paths were counted as entries: %v", err)
	}
}

// TestDecodeIndexSizeBoundFollowsTheCap: the decompressed size allowed is
// IndexBytesPerEntry per allowed entry (and 1 MiB), so a lower cap refuses
// a large index before it is parsed, whatever its entry count.
func TestDecodeIndexSizeBoundFollowsTheCap(t *testing.T) {
	raw := `{"format":1,"roots":["c"],"packs":[],"entries":[{"p":"` + strings.Repeat("a", 3<<20) + `","t":"d","m":493,"mt":0,"k":-1}]}`
	blob := zstdBlob(t, raw)
	withMaxEntries(t, 10)
	_, err := DecodeIndex(blob)
	if !errors.Is(err, ErrIndexTooLarge) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a 3 MiB index with a cap of 10 entries: got %v, want a refusal on its size", err)
	}
	withMaxEntries(t, 10000) // 5 MiB allowed: parsed, then refused as a bad path
	if _, err := DecodeIndex(blob); errors.Is(err, ErrIndexTooLarge) {
		t.Fatalf("a 3 MiB index with a cap of 10,000 entries was refused on its size: %v", err)
	}
}

// TestIndexMemoryPerEntry measures what decoding costs per entry, the
// figures docs/FORMAT.md states, and fails if they double.
func TestIndexMemoryPerEntry(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	if testing.Short() {
		t.Skip("decodes 200,000 entries")
	}
	const n = 200_000
	blob, err := manyEntries(n).Encode()
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC() // twice: sync.Pools (the encoder's) empty over two cycles
	runtime.GC()
	runtime.ReadMemStats(&before)
	x, err := DecodeIndex(blob)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	entries := float64(len(x.Entries))
	allocated := float64(after.TotalAlloc-before.TotalAlloc) / entries
	live := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / entries
	runtime.KeepAlive(x)
	t.Logf("decoding %d entries (%d bytes compressed): %.0f B allocated and %.0f B live per entry", len(x.Entries), len(blob), allocated, live)
	// Read whole (before the stream), the same index cost about 730 B
	// allocated and 260 live an entry; streamed with hex digests, 440 and
	// 185.
	if allocated > 330 || live > 175 {
		t.Errorf("decoding costs %.0f B allocated and %.0f B live per entry: docs/FORMAT.md says about 260 and 145", allocated, live)
	}
}

// TestDecodeIndexDispatchesOnFormat: the format member picks the decoder,
// wherever it is in the object; a version this build does not read is
// refused as unsupported, never parsed as version 1.
func TestDecodeIndexDispatchesOnFormat(t *testing.T) {
	body := `"roots":["c"],"packs":[],"entries":[{"p":"d","t":"d","m":493,"mt":0,"k":-1}]`
	first, err := DecodeIndex(zstdBlob(t, `{"format":1,`+body+`}`))
	if err != nil {
		t.Fatal(err)
	}
	last, err := DecodeIndex(zstdBlob(t, `{`+body+`,"format":1}`))
	if err != nil {
		t.Fatalf("format as the last member: %v", err)
	}
	if !first.Equal(last) {
		t.Errorf("the same index with its members in another order decoded differently: %+v, %+v", first, last)
	}
	for _, raw := range []string{`{"format":2,` + body + `}`, `{` + body + `,"format":0}`} {
		if _, err := DecodeIndex(zstdBlob(t, raw)); !errors.Is(err, format.ErrUnsupported) {
			t.Errorf("%s: got %v, want format.ErrUnsupported", raw[:12], err)
		}
	}
	for _, raw := range []string{`{` + body + `}`, `[1]`, `{"format":"1",` + body + `}`} {
		if _, err := DecodeIndex(zstdBlob(t, raw)); err == nil || errors.Is(err, format.ErrUnsupported) {
			t.Errorf("%s: got %v, want a decoding error", raw[:5], err)
		}
	}
}
