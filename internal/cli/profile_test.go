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

// TestCPUProfile checks --cpuprofile and CACHE_CPUPROFILE: the profile is
// written (gzip, as pprof writes it) and its file closed when Execute
// returns.
func TestCPUProfile(t *testing.T) {
	for _, viaEnv := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "cpu.pprof")
		args := []string{"key", "--key", "k1", "--cpuprofile", path}
		if viaEnv {
			t.Setenv("CACHE_CPUPROFILE", path)
			args = args[:3]
		}
		if r := cache(t, args...); r.code != 0 {
			t.Fatalf("cache %v: %+v", args, r)
		}
		data, err := os.ReadFile(path)
		if err != nil || len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			t.Errorf("env %v: profile %s: %v, %d bytes, want a gzip profile", viaEnv, path, err, len(data))
		}
		if n := openFDs(t, path); n != 0 {
			t.Errorf("env %v: %d descriptor(s) still open on the profile", viaEnv, n)
		}
	}
	bad := filepath.Join(t.TempDir(), "missing", "cpu.pprof")
	if r := cache(t, "key", "--key", "k1", "--cpuprofile", bad); r.code != 0 || r.stderr == "" {
		t.Errorf("unwritable profile: %+v, want a warning and exit 0", r)
	}
}
