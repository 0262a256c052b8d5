package engine

import (
	"fmt"
	"runtime"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Platform is this machine's GOOS/GOARCH, as entries record it.
func Platform() string { return runtime.GOOS + "/" + runtime.GOARCH }

// platformProblem says why an entry saved on another platform is not
// restored here (empty: it is usable). Entries that do not say where they
// were saved are usable.
func platformProblem(ref *store.Ref, here string, anyPlatform bool) string {
	if anyPlatform || ref.Platform == "" || ref.Platform == here {
		return ""
	}
	return fmt.Sprintf("entry %s was saved on %s, this is %s: native code and binaries do not carry over; put {{os}}-{{arch}} in the key so each platform has its own entry, or pass --cross-platform for a platform-neutral cache", ref.Key, ref.Platform, here)
}
