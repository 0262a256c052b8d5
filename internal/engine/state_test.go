package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// FuzzReadState: a restore state file holds whatever the workspace holds.
// Any bytes give either no base (the save then reads every file) or a state
// whose index matches its digest and validates; never a panic.
func FuzzReadState(f *testing.F) {
	// Seed with a real state file.
	st := memory.NewStore("t")
	src := f.TempDir()
	testtree.Make(f, src)
	save(f, st, "k", src)
	real, err := os.ReadFile(filepath.Join(src, archive.StateFileName))
	if err != nil {
		f.Fatal(err)
	}
	if s, why := readState([]string{src}, nil); s == nil || s.Folders != 1 {
		f.Fatalf("the state a save wrote does not read back (%s): the seed would test nothing", why)
	}
	walked, _, err := archive.Walk([]string{src})
	if err != nil {
		f.Fatal(err)
	}
	walked.Roots[0] = filepath.Base(src)
	f.Add(real)
	f.Add([]byte(`{"format":2,"key":"k","index":"sha256:00","index_blob":"AAAA"}`))
	f.Add([]byte(`{"format":2,"written":"not a time","index_blob":123}`))
	f.Add([]byte(`{"format":2,"root":0,"dev":[1],"ino":[2,3],"ctime":[]}`))
	f.Add([]byte(`{"format":3,"index_size":4,"records":1}` + "\n\x28\xb5\x2f\xfd" + string(make([]byte, 24))))
	f.Add([]byte(`{"format":3,"index_size":-1,"records":9223372036854775807}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, archive.StateFileName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, why := readState([]string{dir}, nil)
		if s == nil {
			if why == "" {
				t.Fatal("no state and no reason")
			}
			return
		}
		defer s.close()
		// Its index is checked as it is read: one that does not match
		// its digest is never joined.
		_, readErr := io.ReadAll(s.blob.reader())
		// Joined to a walk (the tree the seed was saved from), it is
		// either refused or gives matches that hold together.
		b := &base{name: "state", blob: s.blob, fs: s}
		if err := b.join(walked); err != nil {
			return
		}
		if readErr != nil {
			t.Fatalf("a state whose index does not read back as its digest (%v) was joined", readErr)
		}
		for i, k := range b.at {
			if k == 0 {
				continue
			}
			if int(k) > len(b.files) || int(b.files[k-1].pack) >= len(b.packs) || b.files[k-1].pack < 0 || b.files[k-1].digest.IsZero() {
				t.Fatalf("entry %d joined to %d of %d files, pack out of %d", i, k, len(b.files), len(b.packs))
			}
		}
		if len(b.total) != len(b.packs) {
			t.Fatalf("%d pack totals for %d packs", len(b.total), len(b.packs))
		}
	})
}

// TestOldStateReadsAsNoState: a state of format 2 (one JSON object, the
// index blob in base64 and the records as arrays) is not used, small or
// large: the save reads every file, and says why.
func TestOldStateReadsAsNoState(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	fs, why := readState([]string{src}, nil)
	if fs == nil {
		t.Fatalf("the state a save wrote does not read back: %s", why)
	}
	defer fs.close()
	blob, err := io.ReadAll(fs.blob.reader())
	if err != nil {
		t.Fatal(err)
	}
	// Its records as format 2 held them: what format 2 would have used.
	var dev, ino []uint64
	var ctime []int64
	for _, id := range wholeState(t, fs).ids {
		dev, ino, ctime = append(dev, id.Dev), append(ino, id.Ino), append(ctime, id.Ctime)
	}
	for _, pad := range []int{0, 100 << 10} {
		old, err := json.Marshal(map[string]any{
			"format": 2, "key": "k", "written": time.Now(), "index": fs.Index, "index_blob": blob,
			"root": 0, "racy_before": time.Now().UnixNano(), "dev": dev, "ino": ino, "ctime": ctime,
			"store": strings.Repeat("x", pad),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, archive.StateFileName), old, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, why := readState([]string{src}, nil); got != nil || !strings.Contains(why, "not usable") {
			t.Fatalf("a format 2 state of %d bytes: got %v (%q), want none and why", len(old), got, why)
		}
		var logs []string
		res, err := Save(context.Background(), st, SaveOptions{Key: fmt.Sprint("k2-", pad), Folders: []string{src}, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }})
		if err != nil {
			t.Fatal(err)
		}
		if res.Base != "" || !strings.Contains(strings.Join(logs, "\n"), "not usable") {
			t.Fatalf("a save over a format 2 state used base %q (logs %q), want none and a line saying why", res.Base, logs)
		}
	}
}

// TestStateFileHoldsBlobAndRecordsRaw: the state is its header line, the
// index blob and 24 bytes a record, nothing else (format 2 held the blob
// in base64 and the records in decimal, in one JSON object read whole).
func TestStateFileHoldsBlobAndRecordsRaw(t *testing.T) {
	st := memory.NewStore("t")
	src := t.TempDir()
	testtree.Make(t, src)
	save(t, st, "k", src)
	data, err := os.ReadFile(filepath.Join(src, archive.StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := readState([]string{src}, nil)
	defer fs.close()
	line, _, _ := bytes.Cut(data, []byte("\n"))
	if want := len(line) + 1 + int(fs.blob.size) + recordSize*len(wholeState(t, fs).ids); len(data) != want {
		t.Fatalf("the state is %d bytes, want %d (header, blob, records)", len(data), want)
	}
}

// wholeState is the state fs read for a save: its records, one per file
// with content in the index's order (zero: none, or not trusted).
type decodedState struct{ ids []archive.FileID }

func wholeState(t testing.TB, fs *folderState) decodedState {
	t.Helper()
	var ids []archive.FileID
	if _, err := fs.visit(func(pos int, e *archive.Entry, rec archive.FileID) error {
		if hasContent(e) {
			ids = append(ids, rec)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return decodedState{ids}
}

// TestSpilledIndexMakesTheSameState: a restore whose index blob waits in
// a temporary file (every blob here: spillAbove 0) writes the state a blob
// held in memory gives, so that the next save reads nothing; and a blob
// whose file was changed meanwhile gives no state rather than a state of
// other bytes.
func TestSpilledIndexMakesTheSameState(t *testing.T) {
	st := memory.NewStore("t")
	src := filepath.Join(t.TempDir(), "c")
	testtree.Make(t, src)
	save(t, st, "k1", src)
	states := map[int][]byte{}
	for _, above := range []int{1 << 30, 0} {
		defer func(old int) { spillAbove = old }(spillAbove)
		spillAbove = above
		dst := filepath.Join(t.TempDir(), "c")
		restore(t, st, "k1", nil, dst)
		b, err := os.ReadFile(filepath.Join(dst, archive.StateFileName))
		if err != nil {
			t.Fatal(err)
		}
		states[above] = b
		if res := save(t, st, "k2", dst); res.UploadedBytes != 0 || res.HashedFiles != 0 {
			t.Fatalf("spillAbove %d: the save after the restore sent %d bytes and hashed %d files, want a no-op", above, res.UploadedBytes, res.HashedFiles)
		}
	}
	// Both hold the entry's index blob after their header line (the
	// records after it are of other files).
	want, _ := indexBlobOf(t, st, "k1")
	for above, b := range states {
		if !bytes.HasPrefix(b[bytes.IndexByte(b, '\n')+1:], want) {
			t.Fatalf("spillAbove %d: the state does not hold the entry's index blob", above)
		}
	}

	blob := []byte(strings.Repeat("index bytes ", 1000))
	ib := spillIndex(blob, digest.FromBytes(blob))
	defer ib.close()
	if ib.file == nil || ib.bytes != nil {
		t.Fatalf("spillAbove 0: the blob was kept in memory (%+v)", ib)
	}
	var out bytes.Buffer
	if err := ib.writeTo(&out); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("read back %d bytes (%v), want the %d written", out.Len(), err, len(blob))
	}
	if _, err := ib.file.WriteAt([]byte("X"), 100); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	x := &archive.Index{Format: format.Version, Roots: []string{"c"}}
	err := writeState([]string{dir}, x, ib, nil, 1<<62, "k", "s", time.Now())
	if !errors.Is(err, digest.ErrMismatch) {
		t.Fatalf("writing a state from a changed spill: %v, want a digest mismatch", err)
	}
	if _, err := os.Stat(filepath.Join(dir, archive.StateFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a state was written from a changed spill (%v)", err)
	}
}

// TestStateIndexOtherThanItsDigestIsNotUsed: a state whose index bytes are
// not the index its header names (here a valid index that says another
// digest for one file) is read as it is visited, so it is found out then:
// the save uses no base (it reads every file) and publishes the file's real
// digest.
func TestStateIndexOtherThanItsDigestIsNotUsed(t *testing.T) {
	st := memory.NewStore("t")
	src := filepath.Join(t.TempDir(), "c")
	testtree.Make(t, src)
	save(t, st, "k1", src)
	blob, _ := indexBlobOf(t, st, "k1")
	x, err := archive.DecodeIndex(blob)
	if err != nil {
		t.Fatal(err)
	}
	forged := -1
	for i := range x.Entries {
		if hasContent(&x.Entries[i]) {
			forged = i
			break
		}
	}
	real := x.Entries[forged].Digest
	x.Entries[forged].Digest = digest.SumBytes([]byte("other content"))
	other, err := x.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(src, archive.StateFileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line, rest, _ := bytes.Cut(data, []byte("\n"))
	var head map[string]any
	if err := json.Unmarshal(line, &head); err != nil {
		t.Fatal(err)
	}
	head["index_size"] = len(other)
	line, _ = json.Marshal(head)
	forgedState := append(append(append(line, '\n'), other...), rest[len(blob):]...)
	if err := os.WriteFile(path, forgedState, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := save(t, st, "k2", src); res.Base != "" {
		t.Fatalf("a save over a state holding another index used base %q, want none", res.Base)
	}
	got, _ := indexBlobOf(t, st, "k2")
	y, err := archive.DecodeIndex(got)
	if err != nil {
		t.Fatal(err)
	}
	for i := range y.Entries {
		if y.Entries[i].Path == x.Entries[forged].Path && y.Entries[i].Root == x.Entries[forged].Root && y.Entries[i].Digest != real {
			t.Fatalf("%s was published with digest %s, not its content's %s", y.Entries[i].Path, y.Entries[i].Digest, real)
		}
	}
}

// TestStateFileIsClosed: the state file, which holds the base's index
// while a save or restore joins it, is closed when each ends, whether its
// state was used or not (the collector is off: a finalizer would close a
// lost file too, some time later).
func TestStateFileIsClosed(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	st := memory.NewStore("t")
	src := filepath.Join(t.TempDir(), "c")
	testtree.Make(t, src)
	save(t, st, "k1", src)
	open := func() int {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(fds)
	}
	before := open()
	check := func(what string) {
		t.Helper()
		if after := open(); after != before {
			t.Fatalf("%d descriptors open after %s, %d before", after, what, before)
		}
	}
	save(t, st, "k2", src)
	check("a no-op save over the state")
	if err := os.WriteFile(filepath.Join(src, "new"), []byte("new file"), 0o644); err != nil {
		t.Fatal(err)
	}
	save(t, st, "k3", src)
	check("a save that joins the state")
	restore(t, st, "k1", nil, src)
	check("a restore over another entry's state")
	save(t, memory.NewStore("other"), "k1", src)
	check("a save over a state whose index the store lacks")
}
