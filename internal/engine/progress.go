package engine

import (
	"io"
	"sync/atomic"
	"time"
)

// Progress receives snapshots of a save or a restore while it moves bytes,
// every SaveOptions.ProgressEvery or RestoreOptions.ProgressEvery: the
// caller decides how to show them (the CLI prints a line). Calls come from
// one goroutine at a time, none after Save or Restore returned, and must
// return quickly.
type Progress interface {
	Saving(SaveProgress)
	Restoring(RestoreProgress)
}

// SaveProgress is how far a save's new packs are.
type SaveProgress struct {
	// Packed of Total bytes of files were compressed into packs.
	Packed, Total int64
	// Uploaded of Packs new packs were sent (a pack the store already held
	// is not), UploadedBytes their bytes.
	Uploaded, Packs int
	UploadedBytes   int64
}

// RestoreProgress is how far a restore's downloads are.
type RestoreProgress struct {
	// Downloaded of Total bytes of packs were read from the store.
	Downloaded, Total int64
	// Done of Packs packs were extracted.
	Done, Packs int
	// Written is the content written into the folders.
	Written int64
}

// defaultProgressEvery is how often progress is reported unless the
// options say otherwise.
const defaultProgressEvery = 10 * time.Second

// noProgress is the Progress of options that give none.
type noProgress struct{}

func (noProgress) Saving(SaveProgress)       {}
func (noProgress) Restoring(RestoreProgress) {}

// reportEvery calls report every interval until stop is called; stop
// returns once no call is in progress.
func reportEvery(every time.Duration, report func()) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	t := time.NewTicker(every)
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				report()
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done); <-exited }
}

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// reportingDefaults fills in the reporting options Save and Restore share:
// no log, no progress, and a progress report every defaultProgressEvery.
func reportingDefaults(logf *func(string, ...any), p *Progress, every *time.Duration) {
	if *logf == nil {
		*logf = func(string, ...any) {}
	}
	if *p == nil {
		*p = noProgress{}
	}
	if *every <= 0 {
		*every = defaultProgressEvery
	}
}
