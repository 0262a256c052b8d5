package cli

import (
	"os"
	"path/filepath"
	"testing"
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
