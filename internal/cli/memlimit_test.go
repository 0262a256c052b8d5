package cli

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
)

// TestSoftMemoryLimit: after a collection, the soft limit is 1.25 times the
// live heap (at least memoryFloor); stopping lifts it; GOMEMLIMIT or GOGC
// set leaves the runtime alone.
func TestSoftMemoryLimit(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	limit := func() int64 { return debug.SetMemoryLimit(-1) }
	// until collects until the finalizer has run and the limit satisfies ok
	// (finalizers run after the collection, in their own goroutine).
	until := func(ok func(int64) bool) int64 {
		for range 1000 {
			runtime.GC()
			runtime.Gosched()
			if l := limit(); ok(l) {
				return l
			}
		}
		return limit()
	}
	stop := softMemoryLimit()
	live := make([]byte, 400<<20)
	if l := until(func(l int64) bool { return l >= 500<<20 }); l < 500<<20 || l > 560<<20 {
		t.Errorf("with 400 MiB live the limit is %d MiB, want about 500", l>>20)
	}
	runtime.KeepAlive(live)
	live = nil
	if l := until(func(l int64) bool { return l == memoryFloor }); l != memoryFloor {
		t.Errorf("with little live the limit is %d MiB, want the floor (%d MiB)", l>>20, memoryFloor>>20)
	}
	stop()
	if l := limit(); l != math.MaxInt64 {
		t.Errorf("after stop the limit is %d, want none", l)
	}
	t.Setenv("GOGC", "100")
	softMemoryLimit()()
	runtime.GC()
	if l := limit(); l != math.MaxInt64 {
		t.Errorf("with GOGC set the limit is %d, want none", l)
	}
}
