package cli

import (
	"fmt"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/engine"
)

// TestProgressLines: the engine's snapshots print as the lines a user has
// always seen.
func TestProgressLines(t *testing.T) {
	var got []string
	p := logProgress(func(format string, args ...any) { got = append(got, fmt.Sprintf(format, args...)) })
	p.Saving(engine.SaveProgress{Packed: 1536, Total: 2 << 20, Uploaded: 1, Packs: 3, UploadedBytes: 512})
	p.Restoring(engine.RestoreProgress{Downloaded: 3 << 30, Total: 5 << 30, Done: 2, Packs: 7, Written: 1023})
	want := []string{
		"saving: packed 1.5 KiB of 2.0 MiB, uploaded 1/3 packs (512 B)",
		"restoring: downloaded 3.0 GiB of 5.0 GiB, 2/7 packs, wrote 1023 B",
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("lines %q, want %q", got, want)
	}
}
