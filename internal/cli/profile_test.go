package cli

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// openFDs counts this process's descriptors open on path.
func openFDs(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestCPUProfile checks --cpuprofile and CACHE_CPUPROFILE, --memprofile
// and CACHE_MEMPROFILE: the profiles are
// written (gzip, as pprof writes it) and its file closed when Execute
// returns.
func TestCPUProfile(t *testing.T) {
	for _, viaEnv := range []bool{false, true} {
		dir := t.TempDir()
		path, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
		args := []string{"key", "--key", "k1", "--cpuprofile", path, "--memprofile", mem}
		if viaEnv {
			t.Setenv("CACHE_CPUPROFILE", path)
			t.Setenv("CACHE_MEMPROFILE", mem)
			args = args[:3]
		}
		if r := cache(t, args...); r.code != 0 {
			t.Fatalf("cache %v: %+v", args, r)
		}
		for _, p := range []string{path, mem} {
			data, err := os.ReadFile(p)
			if err != nil || len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
				t.Errorf("env %v: profile %s: %v, %d bytes, want a gzip profile", viaEnv, p, err, len(data))
			}
			if n := openFDs(t, p); n != 0 {
				t.Errorf("env %v: %d descriptor(s) still open on the profile %s", viaEnv, n, p)
			}
		}
	}
	bad := filepath.Join(t.TempDir(), "missing", "cpu.pprof")
	if r := cache(t, "key", "--key", "k1", "--cpuprofile", bad); r.code != 0 || r.stderr == "" {
		t.Errorf("unwritable profile: %+v, want a warning and exit 0", r)
	}
}

var profileSink []byte

//go:noinline
func allocatedJustBeforeTheProfile() { profileSink = make([]byte, 1<<20) }

// TestHeapProfileCountsEveryAllocation: the heap profile is as of the
// last collection, so one written without a collection first left out
// what the command allocated since the last automatic one (a no-op save's
// whole join, profiled).
func TestHeapProfileCountsEveryAllocation(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no automatic collection from here
	allocatedJustBeforeTheProfile()
	path := filepath.Join(t.TempDir(), "mem.pprof")
	if err := writeHeapProfile(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	// The profile's samples (field 2 of a Profile, protowire-encoded) each
	// hold their values (field 2, packed): alloc_objects, alloc_space,
	// inuse_objects, inuse_space.
	var allocated int64
	eachField(t, raw, func(num protowire.Number, typ protowire.Type, sample []byte) {
		if num != 2 || typ != protowire.BytesType {
			return
		}
		eachField(t, sample, func(num protowire.Number, typ protowire.Type, packed []byte) {
			for i := 0; num == 2 && typ == protowire.BytesType && len(packed) > 0; i++ {
				v, k := protowire.ConsumeVarint(packed)
				if k < 0 {
					t.Fatal("a sample's values do not decode")
				}
				if i == 1 {
					allocated += int64(v)
				}
				packed = packed[k:]
			}
		})
	})
	if allocated < 1<<20 {
		t.Fatalf("the heap profile counts %d bytes allocated, not the MiB allocated just before it", allocated)
	}
}

// eachField calls f with each field of the protowire message b: its
// number, type and value (a length-delimited one's content).
func eachField(t *testing.T, b []byte, f func(protowire.Number, protowire.Type, []byte)) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal("the heap profile does not decode")
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			t.Fatal("the heap profile does not decode")
		}
		v := b[:n]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		f(num, typ, v)
		b = b[n:]
	}
}
