package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// Point 4 of issue 10: the restore state lives in the workspace, which the
// build can write. Whatever it holds, a save publishes an entry that
// restores to exactly what is on disk.
//
// The forgeries are generic, so that they keep meaning something when the
// state's layout changes: they flip hex digits of strings that look like
// digests, rotate the numbers of arrays of objects (pack numbers, offsets,
// and whatever per-file records the state holds), swap the embedded index
// blob (any base64 string holding a zstd frame) or the index digest with
// another entry's, truncate, or replace the whole with garbage. A forger
// keeps the state self-consistent: wherever the digest of an embedded index
// it changed appears, it writes the digest of the new one.

var (
	hexDigest    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	prefixDigest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	zstdMagic    = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decodeJSON parses data keeping numbers exact (mtimes in nanoseconds do
// not fit a float64).
func decodeJSON(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("the restore state is not JSON: %v", err)
	}
	return v
}

func encodeJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stateAsJSON returns a state file as one JSON object, which the forgeries
// change: its header's members (the sizes left out), "index_blob" (base64)
// and the records as "dev", "ino" and "ctime" arrays.
func stateAsJSON(t *testing.T, data []byte) []byte {
	t.Helper()
	line, rest, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		t.Fatal("the restore state has no header line")
	}
	m := decodeJSON(t, line).(map[string]any)
	n, _ := m["index_size"].(json.Number).Int64()
	delete(m, "index_size")
	delete(m, "records")
	m["index_blob"] = base64.StdEncoding.EncodeToString(rest[:n])
	var dev, ino, ctime []any
	for rec := rest[n:]; len(rec) >= recordSize; rec = rec[recordSize:] {
		dev = append(dev, json.Number(fmt.Sprint(binary.LittleEndian.Uint64(rec))))
		ino = append(ino, json.Number(fmt.Sprint(binary.LittleEndian.Uint64(rec[8:]))))
		ctime = append(ctime, json.Number(fmt.Sprint(int64(binary.LittleEndian.Uint64(rec[16:])))))
	}
	m["dev"], m["ino"], m["ctime"] = dev, ino, ctime
	return encodeJSON(t, m)
}

// stateFromJSON is the state file of stateAsJSON's view.
func stateFromJSON(t *testing.T, j []byte) []byte {
	t.Helper()
	m := decodeJSON(t, j).(map[string]any)
	blob, err := base64.StdEncoding.DecodeString(m["index_blob"].(string))
	if err != nil {
		t.Fatal(err)
	}
	arrays := [3][]any{}
	for i, k := range []string{"dev", "ino", "ctime"} {
		arrays[i], _ = m[k].([]any)
		delete(m, k)
	}
	if len(arrays[0]) != len(arrays[1]) || len(arrays[0]) != len(arrays[2]) {
		t.Fatal("test bug: a forgery made the records' arrays of different lengths")
	}
	delete(m, "index_blob")
	m["index_size"], m["records"] = len(blob), len(arrays[0])
	out := append(encodeJSON(t, m), '\n')
	out = append(out, blob...)
	for i := range arrays[0] {
		for _, a := range arrays {
			n, err := strconv.ParseInt(string(a[i].(json.Number)), 10, 64)
			if err != nil {
				u, _ := strconv.ParseUint(string(a[i].(json.Number)), 10, 64)
				n = int64(u)
			}
			out = binary.LittleEndian.AppendUint64(out, uint64(n))
		}
	}
	return out
}

// walkStrings replaces every string s of v (map values and array elements,
// recursively) by f(s).
func walkStrings(v any, f func(string) string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = walkStrings(e, f)
		}
	case []any:
		for i, e := range x {
			x[i] = walkStrings(e, f)
		}
	case string:
		return f(x)
	}
	return v
}

// numericKeys lists the keys of numeric fields of objects held in arrays.
func numericKeys(v any, keys map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			numericKeys(e, keys)
		}
	case []any:
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				for k, f := range m {
					if _, ok := f.(json.Number); ok {
						keys[k] = true
					}
				}
			}
			numericKeys(e, keys)
		}
	}
}

// rotateNumbers gives each object of every array the value of key of the
// next object that has it with a value >= 0 (the last takes the first's;
// negative values are markers, such as "no pack"), and reports whether
// anything changed.
func rotateNumbers(v any, key string) bool {
	changed := false
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			changed = rotateNumbers(e, key) || changed
		}
	case []any:
		var holders []map[string]any
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				if n, ok := m[key].(json.Number); ok && !strings.HasPrefix(string(n), "-") {
					holders = append(holders, m)
				}
			}
			changed = rotateNumbers(e, key) || changed
		}
		if len(holders) > 1 {
			first := holders[0][key]
			for i := range holders {
				next := first
				if i+1 < len(holders) {
					next = holders[i+1][key]
				}
				if holders[i][key] != next {
					changed = true
				}
				holders[i][key] = next
			}
		}
	}
	return changed
}

// flipHex changes the first hex digit of a digest (so that error messages,
// which show a digest's start, show the difference).
func flipHex(s string) string {
	b := []byte(s)
	i := strings.IndexByte(s, ':') + 1
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	return string(b)
}

// embeddedIndex reports whether s is a base64 string holding a zstd frame,
// and its bytes.
func embeddedIndex(s string) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || !bytes.HasPrefix(b, zstdMagic) {
		return nil, false
	}
	return b, true
}

// forgeIndex rewrites every index blob embedded in the state with f (which
// gets and returns the blob) and fixes up the digests that named the old
// blob. It reports whether the state embeds an index.
func forgeIndex(t *testing.T, state any, f func(blob []byte) []byte) (any, bool) {
	t.Helper()
	renamed := map[string]string{}
	found := false
	state = walkStrings(state, func(s string) string {
		blob, ok := embeddedIndex(s)
		if !ok {
			return s
		}
		found = true
		nb := f(blob)
		renamed[digest.FromBytes(blob).String()] = digest.FromBytes(nb).String()
		renamed[digest.FromBytes(blob).Hex()] = digest.FromBytes(nb).Hex()
		return base64.StdEncoding.EncodeToString(nb)
	})
	state = walkStrings(state, func(s string) string {
		if n, ok := renamed[s]; ok {
			return n
		}
		return s
	})
	return state, found
}

// mutateIndexJSON decodes an index blob, applies f to its JSON and encodes
// it again.
func mutateIndexJSON(t *testing.T, blob []byte, f func(v any)) []byte {
	t.Helper()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	raw, err := dec.DecodeAll(blob, nil)
	if err != nil {
		t.Fatalf("embedded index: %v", err)
	}
	v := decodeJSON(t, raw)
	f(v)
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	return enc.EncodeAll(encodeJSON(t, v), nil)
}

// forgeryTree writes files of distinct sizes, all with the pinned mtime; tag
// changes the bytes only.
func forgeryTree(t *testing.T, dir, tag string) {
	t.Helper()
	for i := range 8 {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		line := fmt.Sprintf("%s file %d\n", tag, i)
		data := strings.Repeat(line, 1+(300+i*97)/len(line))[:300+i*97]
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	os.Symlink("d0/f0", filepath.Join(dir, "link"))
	testtree.Touch(t, dir, pinned)
	for i := range 8 { // distinct mtimes, as the sizes are
		when := pinned.Add(time.Duration(i) * time.Second)
		os.Chtimes(filepath.Join(dir, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%d", i)), when, when)
	}
}

func indexBlobOf(t *testing.T, st store.Store, key string) ([]byte, digest.Digest) {
	t.Helper()
	ref, err := st.GetRef(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := st.GetBlob(context.Background(), ref.Index.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b, ref.Index.Digest
}

type forgery struct {
	name string
	// raw: the forgery works on the file's bytes, not on its JSON view
	// (stateAsJSON).
	raw bool
	// namesOther: the forged state names another entry of the store as
	// the folder's base, with the records of this one. Nothing in the
	// workspace can tell that from a build that wrote the other entry's
	// bytes itself (which any build can), and the remedy holds: the
	// base index is one the store has. So the saved entry must restore, and
	// each of its files must hold what was on disk or what the other entry
	// holds at that path, never anything else.
	namesOther bool
	// forge returns the new state file, or ok=false when the state has
	// nothing of the kind (the test then skips, saying so).
	forge func(t *testing.T, data []byte) ([]byte, bool)
}

// forgeries lists one forgery per kind. otherBlob and otherDigest are
// another entry's index; key is the entry the state names.
func forgeries(t *testing.T, state []byte, key, otherKey string, otherBlob []byte, otherDigest, ownDigest digest.Digest) []forgery {
	fs := []forgery{
		{"none (control)", false, false, func(t *testing.T, d []byte) ([]byte, bool) { return d, true }},
		{"garbage", true, false, func(t *testing.T, d []byte) ([]byte, bool) {
			return []byte("\x00\xff{not json at all\x7f"), true
		}},
		{"truncated", true, false, func(t *testing.T, d []byte) ([]byte, bool) { return d[:len(d)/2], true }},
		{"empty", true, false, func(t *testing.T, d []byte) ([]byte, bool) { return nil, true }},
		{"null", true, false, func(t *testing.T, d []byte) ([]byte, bool) { return []byte("null"), true }},
		{"state digests flipped", false, false, func(t *testing.T, d []byte) ([]byte, bool) {
			n := 0
			v := walkStrings(decodeJSON(t, d), func(s string) string {
				if hexDigest.MatchString(s) || prefixDigest.MatchString(s) {
					n++
					return flipHex(s)
				}
				return s
			})
			return encodeJSON(t, v), n > 0
		}},
		{"index file digests flipped", false, false, flipInIndex(hexDigest)},
		{"index pack digests flipped", false, false, flipInIndex(prefixDigest)},
		{"index re-encoded, so not in the store", false, false, func(t *testing.T, d []byte) ([]byte, bool) {
			same := false
			v, ok := forgeIndex(t, decodeJSON(t, d), func(blob []byte) []byte {
				nb := mutateIndexJSON(t, blob, func(any) {})
				same = bytes.Equal(nb, blob)
				return nb
			})
			if same {
				t.Fatal("test bug: re-encoding gave the same blob")
			}
			return encodeJSON(t, v), ok
		}},
		{"index of another key", false, true, func(t *testing.T, d []byte) ([]byte, bool) {
			v, ok := forgeIndex(t, decodeJSON(t, d), func([]byte) []byte { return otherBlob })
			if !ok { // a state that names its index by digest only
				n := 0
				v = walkStrings(decodeJSON(t, d), func(s string) string {
					switch s {
					case ownDigest.String():
						n++
						return otherDigest.String()
					case ownDigest.Hex():
						n++
						return otherDigest.Hex()
					}
					return s
				})
				ok = n > 0
			}
			return encodeJSON(t, v), ok
		}},
	}
	swap := fs[len(fs)-1].forge
	fs = append(fs, forgery{"index of another key, and its key", false, true, func(t *testing.T, d []byte) ([]byte, bool) {
		d, ok := swap(t, d)
		v := walkStrings(decodeJSON(t, d), func(s string) string {
			if s == key {
				return otherKey
			}
			return s
		})
		return encodeJSON(t, v), ok
	}})
	// Numbers: pack numbers, offsets, sizes, mtimes, modes, and whatever
	// per-file records the state holds, in the state and in its index.
	top := map[string]bool{}
	numericKeys(decodeJSON(t, state), top)
	for _, k := range sortedKeys(top) {
		fs = append(fs, forgery{"state numbers rotated: " + k, false, false, func(t *testing.T, d []byte) ([]byte, bool) {
			v := decodeJSON(t, d)
			ok := rotateNumbers(v, k)
			return encodeJSON(t, v), ok
		}})
	}
	inIndex := map[string]bool{}
	forgeIndex(t, decodeJSON(t, state), func(blob []byte) []byte {
		mutateIndexJSON(t, blob, func(x any) { numericKeys(x, inIndex) })
		return blob
	})
	for _, k := range sortedKeys(inIndex) {
		fs = append(fs, forgery{"index numbers rotated: " + k, false, false, func(t *testing.T, d []byte) ([]byte, bool) {
			changed := false
			v, ok := forgeIndex(t, decodeJSON(t, d), func(blob []byte) []byte {
				return mutateIndexJSON(t, blob, func(x any) { changed = rotateNumbers(x, k) })
			})
			return encodeJSON(t, v), ok && changed
		}})
	}
	return fs
}

// flipInIndex forges the embedded index: every string matching re gets a
// digit flipped.
func flipInIndex(re *regexp.Regexp) func(t *testing.T, d []byte) ([]byte, bool) {
	return func(t *testing.T, d []byte) ([]byte, bool) {
		v, ok := forgeIndex(t, decodeJSON(t, d), func(blob []byte) []byte {
			return mutateIndexJSON(t, blob, func(x any) {
				walkStrings(x, func(s string) string {
					if re.MatchString(s) {
						return flipHex(s)
					}
					return s
				})
			})
		})
		return encodeJSON(t, v), ok
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestForgedStateNeverPublishesABadEntry: restore an entry, forge its
// state, change some files (in ways today's checks see: a size change, an
// added and a deleted file), save: the saved entry restores, into an empty
// folder, to exactly what was on disk.
func TestForgedStateNeverPublishesABadEntry(t *testing.T) {
	st := memoryStore()
	lookalikeEntries(t, st)
	otherBlob, otherDigest := indexBlobOf(t, st, "entry-b")
	_, ownDigest := indexBlobOf(t, st, "entry-a")
	otherDir := filepath.Join(t.TempDir(), "nm")
	restore(t, st, "entry-b", nil, otherDir)
	other := testtree.Snapshot(t, otherDir, archive.StateFileName)
	probe := filepath.Join(t.TempDir(), "nm")
	restore(t, st, "entry-a", nil, probe)
	state, err := os.ReadFile(filepath.Join(probe, archive.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range forgeries(t, stateAsJSON(t, state), "entry-a", "entry-b", otherBlob, otherDigest, ownDigest) {
		t.Run(f.name, func(t *testing.T) {
			ws := filepath.Join(t.TempDir(), "nm")
			restore(t, st, "entry-a", nil, ws)
			sp := filepath.Join(ws, archive.StateFileName)
			data, err := os.ReadFile(sp)
			if err != nil {
				t.Fatal(err)
			}
			if !f.raw {
				data = stateAsJSON(t, data)
			}
			forged, ok := f.forge(t, data)
			if !ok {
				t.Skipf("the restore state holds nothing this forgery changes")
			}
			if !f.raw {
				forged = stateFromJSON(t, forged)
			}
			if err := os.WriteFile(sp, forged, 0o644); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(ws, "d1", "f1"), []byte("a new, shorter content\n"), 0o644)
			os.WriteFile(filepath.Join(ws, "added"), []byte("added after the restore\n"), 0o644)
			os.Remove(filepath.Join(ws, "d2", "f5"))
			want := testtree.Snapshot(t, ws, archive.StateFileName)
			if f.namesOther {
				saveRestoresToOr(t, st, fmt.Sprintf("forged-%d", i), ws, want, other)
				return
			}
			saveRestoresTo(t, st, fmt.Sprintf("forged-%d", i), ws, want)
		})
	}
}

// TestStateSymlinkIsNotFollowed: the state file replaced by a symlink to
// another workspace's valid state (of an entry with the same paths, sizes
// and mtimes, other bytes): the save still publishes what is on disk.
func TestStateSymlinkIsNotFollowed(t *testing.T) {
	st := memoryStore()
	lookalikeEntries(t, st)
	other := filepath.Join(t.TempDir(), "nm")
	restore(t, st, "entry-b", nil, other)
	ws := filepath.Join(t.TempDir(), "nm")
	restore(t, st, "entry-a", nil, ws)
	sp := filepath.Join(ws, archive.StateFileName)
	os.Remove(sp)
	if err := os.Symlink(filepath.Join(other, archive.StateFileName), sp); err != nil {
		t.Fatal(err)
	}
	want := testtree.Snapshot(t, ws, archive.StateFileName)
	saveRestoresTo(t, st, "after", ws, want)
}

// lookalikeEntries saves entry-a and entry-b: the same paths, sizes, mtimes
// and modes, other bytes.
func lookalikeEntries(t *testing.T, st store.Store) {
	t.Helper()
	srcA, srcB := filepath.Join(t.TempDir(), "nm"), filepath.Join(t.TempDir(), "nm")
	forgeryTree(t, srcA, "AAAA")
	forgeryTree(t, srcB, "BBBB")
	for key, src := range map[string]string{"entry-a": srcA, "entry-b": srcB} {
		if _, err := Save(context.Background(), st, SaveOptions{Key: key, Folders: []string{src}, PackSize: 2 << 10}); err != nil {
			t.Fatal(err)
		}
	}
}

// saveRestoresToOr is saveRestoresTo where a file may also hold what the
// entry alt holds at its path (same size, mode and mtime as on disk).
func saveRestoresToOr(t *testing.T, st store.Store, key, ws string, want, alt map[string]testtree.Entry) {
	t.Helper()
	if _, err := Save(context.Background(), st, SaveOptions{Key: key, Folders: []string{ws}, PackSize: 2 << 10, Logf: t.Logf}); err != nil {
		t.Fatalf("save failed (a state it cannot trust should make it read every file): %v", err)
	}
	fresh := filepath.Join(t.TempDir(), "nm")
	if _, err := Restore(context.Background(), st, RestoreOptions{Key: key, Folders: []string{fresh}}); err != nil {
		t.Fatalf("the saved entry does not restore: %v", err)
	}
	got := testtree.Snapshot(t, fresh, archive.StateFileName)
	for p, g := range got {
		if w, ok := want[p]; ok && g != w {
			if a, ok := alt[p]; ok && a.Data == g.Data && g.Size == w.Size && g.Mode == w.Mode && g.MTime == w.MTime {
				got[p] = w // the other entry's content, legitimately derived
			}
		}
	}
	testtree.Equal(t, want, got)
}

// saveRestoresTo saves ws under key (the save must succeed: a bad state
// means reading every file) and checks that the entry restores, into an
// empty folder, to want.
func saveRestoresTo(t *testing.T, st store.Store, key, ws string, want map[string]testtree.Entry) {
	t.Helper()
	saveRestoresToOr(t, st, key, ws, want, nil)
}
