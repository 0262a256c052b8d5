package cli

import (
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/humanize"
)

// logProgress prints the engine's progress snapshots as log lines.
type logProgress func(format string, args ...any)

// Saving implements engine.Progress.
func (l logProgress) Saving(p engine.SaveProgress) {
	l("saving: packed %s of %s, uploaded %d/%d packs (%s)", humanBytes(p.Packed), humanBytes(p.Total), p.Uploaded, p.Packs, humanBytes(p.UploadedBytes))
}

// Restoring implements engine.Progress.
func (l logProgress) Restoring(p engine.RestoreProgress) {
	l("restoring: downloaded %s of %s, %d/%d packs, wrote %s", humanBytes(p.Downloaded), humanBytes(p.Total), p.Done, p.Packs, humanBytes(p.Written))
}

var _ engine.Progress = logProgress(nil)

// humanBytes formats a byte count for logs.
func humanBytes(n int64) string { return humanize.Bytes(n) }
