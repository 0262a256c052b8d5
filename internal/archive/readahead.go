package archive

import (
	"errors"
	"io"
	"sync"
)

// readAheadChunk and readAheadBuffers size a readAhead: the buffers it
// fills (256 KiB in all). Measured on a node_modules index (43,000
// entries, 1.9 MB compressed), chunks of 32 to 128 KiB joined a restore
// state to the walk alike; 16 KiB handed off too often.
const (
	readAheadChunk   = 64 << 10
	readAheadBuffers = 4
)

// readAhead reads r in a goroutine of its own, ahead of its consumer, so
// that an index is decompressed on one core while it is parsed and joined
// on another: a no-op save's join ran on one core while the other idled
// (0.72x its time with this). r's bytes and then its error come out in r's
// order. Close it before r's resources (a decoder) are released: Close
// waits for the goroutine, which never reads r after.
type readAhead struct {
	full chan aheadChunk // filled buffers, in order
	free chan []byte     // buffers to fill
	stop chan struct{}
	done sync.WaitGroup

	buf []byte // the buffer being read, returned to free once read
	cur []byte // what is left of it
	err error  // r's error, once every byte before it was read
}

type aheadChunk struct {
	b   []byte
	err error
}

func newReadAhead(r io.Reader) *readAhead {
	a := &readAhead{
		full: make(chan aheadChunk, readAheadBuffers),
		free: make(chan []byte, readAheadBuffers),
		stop: make(chan struct{}),
	}
	for range readAheadBuffers {
		a.free <- make([]byte, readAheadChunk)
	}
	a.done.Add(1)
	go a.fill(r)
	return a
}

// fill reads r into free buffers until r fails or ends, or Close.
func (a *readAhead) fill(r io.Reader) {
	defer a.done.Done()
	for {
		select {
		case <-a.stop: // first: a buffer may be free too
			return
		default:
		}
		var b []byte
		select {
		case b = <-a.free:
		case <-a.stop:
			return
		}
		n, err := io.ReadFull(r, b)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		a.full <- aheadChunk{b[:n], err} // room: every buffer fits
		if err != nil {
			return
		}
	}
}

func (a *readAhead) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		if a.buf != nil {
			a.free <- a.buf[:cap(a.buf)] // room: it came from there
			a.buf = nil
		}
		c := <-a.full
		a.buf, a.cur, a.err = c.b, c.b, c.err
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// Close stops the goroutine and waits for it: r is not read after. It is
// not safe to call Read after Close, nor Close twice.
func (a *readAhead) Close() {
	close(a.stop)
	a.done.Wait()
}
