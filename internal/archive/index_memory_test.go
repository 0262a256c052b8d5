package archive

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	fastjson "github.com/segmentio/encoding/json"
)

// allocated returns the bytes f allocates, per n.
func allocated(n int, f func()) float64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}

// TestSortInPlace: Sort permutes the entries and their IDs together,
// without a second slice of either (4 bytes an entry for the order).
func TestSortInPlace(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	x := manyEntries(20_000)
	for i := range x.Entries {
		x.IDs = append(x.IDs, FileID{Ino: uint64(i), Dev: uint64(len(x.Entries[i].Path))})
		x.Entries[i].Offset = int64(i) // Offset says which ID is the entry's
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(x.Entries), func(i, j int) {
		x.Entries[i], x.Entries[j] = x.Entries[j], x.Entries[i]
		x.IDs[i], x.IDs[j] = x.IDs[j], x.IDs[i]
	})
	per := allocated(len(x.Entries), x.Sort)
	for i := range x.Entries {
		if i > 0 && x.Entries[i-1].Path >= x.Entries[i].Path {
			t.Fatalf("not sorted at %d: %q then %q", i, x.Entries[i-1].Path, x.Entries[i].Path)
		}
		if x.IDs[i].Ino != uint64(x.Entries[i].Offset) {
			t.Fatalf("entry %d has the ID of entry %d", x.Entries[i].Offset, x.IDs[i].Ino)
		}
	}
	if per > 8 {
		t.Errorf("sorting allocated %.0f B an entry, want at most 8 (the order; no copy of the entries)", per)
	}
}

// TestEncodeStreams: Encode gives the zstd of json.Marshal's bytes, without
// holding them: it allocates about the compressed size.
func TestEncodeStreams(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	for _, x := range []*Index{manyEntries(100_000), {Format: 1}, {Format: 1, Roots: []string{"<&>"}, Entries: []Entry{}}} {
		want, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		// The pooled encoder's state (about 9 MB, once per process) is
		// not the index's: the least of three runs, as a collection may
		// empty the pool before any one.
		var blob []byte
		per := math.Inf(1)
		for range 3 {
			per = min(per, allocated(max(1, len(x.Entries)), func() { blob, err = x.Encode() }))
		}
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := zstd.NewReader(nil)
		got, err := dec.DecodeAll(blob, nil)
		dec.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the index's JSON differs from json.Marshal's (%v):\n%.300s\n%.300s", err, got, want)
		}
		if n := len(x.Entries); n > 1000 {
			t.Logf("encoding %d entries: %.0f B allocated an entry, %.0f B of output", n, per, float64(len(blob))/float64(n))
			if per > 2*float64(len(blob))/float64(n)+50 {
				t.Errorf("encoding allocated %.0f B an entry for %.0f B of output: the JSON (~%d B an entry) is held", per, float64(len(blob))/float64(n), len(want)/n)
			}
		}
	}
}

// TestDecodeIndexOtherLayouts: what our writer does not write, but
// encoding/json reads, decodes as encoding/json decodes it (read whole).
func TestDecodeIndexOtherLayouts(t *testing.T) {
	e := `{"p":"d","t":"d","m":493,"mt":0,"k":-1}`
	e2 := `{"p":"e","t":"d","m":493,"mt":0,"k":-1}`
	for name, tc := range map[string]struct {
		raw   string
		paths string
	}{
		"escaped entries name":  {`{"format":1,"roots":["c"],"packs":[],"\u0065ntries":[` + e + `]}`, "d"},
		"entries twice":         {`{"format":1,"roots":["c"],"entries":[` + e + `],"packs":[],"entries":[` + e2 + `]}`, "e"},
		"entries first":         {`{"entries":[` + e + `],"format":1,"roots":["c"],"packs":[]}`, "d"},
		"white space":           {" {\n \"format\" : 1 ,\t\"roots\" : [ \"c\" ] , \"packs\" : [ ] , \"entries\" : [ " + e + " , " + e2 + " ] } \n", "d,e"},
		"no entries":            {`{"format":1,"roots":["c"],"packs":[]}`, ""},
		"null entries":          {`{"format":1,"roots":["c"],"packs":[],"entries":null}`, ""},
		"escaped format inside": {`{"format":1,"roots":["c"],"packs":[],"entries":[` + e + `],"\u0066ormat":1}`, "d"},
	} {
		x, err := DecodeIndex(zstdBlob(t, tc.raw))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var paths []string
		for _, e := range x.Entries {
			paths = append(paths, e.Path)
		}
		if got := strings.Join(paths, ","); got != tc.paths {
			t.Errorf("%s: entries %q, want %q", name, got, tc.paths)
		}
		// VisitIndex gives the same entries; an index found to be in
		// another layout partway is visited again from position 0.
		var visited []string
		if _, err := VisitIndex(zstdBlob(t, tc.raw), func(pos int, e *Entry) error {
			if pos == 0 {
				visited = visited[:0]
			}
			if pos != len(visited) {
				t.Errorf("%s: visited position %d after %d entries", name, pos, len(visited))
			}
			visited = append(visited, strings.Clone(e.Path))
			return nil
		}); err != nil {
			t.Errorf("%s: VisitIndex: %v", name, err)
		}
		if got := strings.Join(visited, ","); got != tc.paths {
			t.Errorf("%s: VisitIndex visited %q, want %q", name, got, tc.paths)
		}
	}
	for name, raw := range map[string]string{
		"trailing comma":  `{"format":1,"roots":["c"],"packs":[],"entries":[` + e + `,]}`,
		"entry not a map": `{"format":1,"roots":["c"],"packs":[],"entries":[1]}`,
		"other format":    `{"format":1,"roots":["c"],"packs":[],"entries":[],"\u0066ormat":7}`,
		"unclosed":        `{"format":1,"roots":["c"],"packs":[],"entries":[` + e,
	} {
		if _, err := DecodeIndex(zstdBlob(t, raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := VisitIndex(zstdBlob(t, raw), func(int, *Entry) error { return nil }); err == nil {
			t.Errorf("%s: accepted by VisitIndex", name)
		}
	}
}

// TestValidateSortedWithoutMap: validating an index in Sort's order
// allocates next to nothing an entry (its parents are found by binary
// search), where a map of every path costs over 100 B an entry; the same
// index shuffled (an order this tool never writes, still accepted) takes
// the map, and both give the same verdicts.
func TestValidateSortedWithoutMap(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	x := manyEntries(20_000)
	var err error
	per := allocated(len(x.Entries), func() { err = x.Validate() })
	if err != nil {
		t.Fatal(err)
	}
	if per > 4 {
		t.Errorf("validating a sorted index allocated %.0f B an entry, want at most 4", per)
	}
	// Shuffled, parents kept first: valid, through the map.
	y := manyEntries(20_000)
	r := rand.New(rand.NewPCG(3, 4))
	dirs, rest := []Entry{}, []Entry{}
	for _, e := range y.Entries {
		if e.Type == TypeDir {
			dirs = append(dirs, e)
		} else {
			rest = append(rest, e)
		}
	}
	r.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	y.Entries = append(dirs, rest...)
	if y.sorted() {
		t.Fatal("the shuffled index is sorted")
	}
	if err := y.Validate(); err != nil {
		t.Fatalf("shuffled: %v", err)
	}
	// A file whose parent is missing, and one listed twice: refused in
	// either order.
	for _, tc := range []struct {
		name string
		edit func(*Index)
		want string
	}{
		{"no parent", func(x *Index) { x.Entries[5].Path = "zz/" + x.Entries[5].Path[3:] }, "is not listed before it"},
		{"twice", func(x *Index) { x.Entries = append(x.Entries, x.Entries[len(x.Entries)-1]) }, "listed twice"},
		{"parent a file", func(x *Index) {
			f := x.Entries[len(x.Entries)-1]
			f.Path += "/child"
			x.Entries = append(x.Entries, f)
		}, "is not a directory"},
	} {
		for _, shuffled := range []bool{false, true} {
			z := manyEntries(2_000)
			tc.edit(z)
			if shuffled {
				z.Entries[300], z.Entries[301] = z.Entries[301], z.Entries[300] // two files of one directory
			} else {
				z.Sort()
			}
			if err := z.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s (shuffled %v): %v, want %q", tc.name, shuffled, err, tc.want)
			}
		}
	}
}

// BenchmarkDecodeIndex decodes the index of 40,000 files (a node_modules):
// the part of a no-op save that reads the restore state's index.
func BenchmarkDecodeIndex(b *testing.B) {
	x := manyEntries(40_000)
	blob, err := x.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeIndex(blob); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeIndexSized: a guess of the entries, right, short, far too
// large or absurd, decodes the same index as DecodeIndex; a right one
// allocates less (no counting pass to decompress the blob for).
func TestDecodeIndexSized(t *testing.T) {
	x := manyEntries(5_000)
	blob, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want, err := DecodeIndex(blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, hint := range []int{0, 1, len(x.Entries), len(x.Entries) * 3, 1 << 40} {
		got, err := DecodeIndexSized(blob, hint)
		if err != nil || !got.Equal(want) {
			t.Errorf("hint %d: %v, same index: %v", hint, err, err == nil && got.Equal(want))
		}
	}
	withMaxEntries(t, 100)
	if _, err := DecodeIndexSized(blob, 50); err == nil || !strings.Contains(err.Error(), "100") {
		t.Errorf("past the cap with a small guess: %v, want the cap's error", err)
	}
}

// BenchmarkParseEntry reads one entry of a node_modules-like index (a
// file, its digest, pack and offset), by parseEntryJSON and by the
// reflective decoder that reads any other text: the ratio of the two is
// what the stream gains on our writer's entries.
func BenchmarkParseEntry(b *testing.B) {
	x := manyEntries(1_000)
	var texts [][]byte
	for i := range x.Entries {
		texts = append(texts, appendEntryJSON(nil, &x.Entries[i]))
	}
	b.Run("parseEntryJSON", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var e Entry
			if parseEntryJSON(texts[i%len(texts)], &e, true) == 0 {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("reflective", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var e Entry
			if _, err := fastjson.Parse(texts[i%len(texts)], &e, fastjson.DisallowUnknownFields|fastjson.DontCopyString); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
