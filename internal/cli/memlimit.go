package cli

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// memoryFloor is the heap below which the soft memory limit leaves the
// collector to GOGC alone (most caches: the go corpus' save peaks at
// about 80 MB of heap).
const memoryFloor = 192 << 20

// softMemoryLimit, unless GOMEMLIMIT or GOGC is set, keeps the memory
// the runtime holds within a quarter of the live heap above it once the
// heap passes memoryFloor: after each collection, the soft limit
// (debug.SetMemoryLimit) is set to 1.25 times the live heap, where GOGC's
// default would let it grow to twice. At 600,000 entries the live heap
// is 200-300 MB: this is what keeps the peak RSS near it (1.5 times: a
// no-op save's peak 347-362 MiB, 1.25 times: 292-297, for the same CPU
// within the noise), for more frequent collections of the large heaps
// only. stop ends it.
func softMemoryLimit() (stop func()) {
	if os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") != "" {
		return func() {}
	}
	var stopped atomic.Bool
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var arm func()
	arm = func() {
		// A finalizer runs after the collection that found its object
		// unreachable: once per cycle, re-armed each time.
		runtime.SetFinalizer(new([16]byte), func(*[16]byte) {
			if stopped.Load() {
				return
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				live := int64(sample[0].Value.Uint64())
				debug.SetMemoryLimit(max(memoryFloor, live+live/4))
			}
			arm()
		})
	}
	arm()
	return func() {
		stopped.Store(true)
		debug.SetMemoryLimit(math.MaxInt64)
	}
}
