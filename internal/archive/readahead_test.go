package archive

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// TestReadAheadGivesTheBytesInOrder reads through a readAhead what
// readers of every chunking give, sizes around its buffers included.
func TestReadAheadGivesTheBytesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, readAheadChunk - 1, readAheadChunk, readAheadChunk + 1, readAheadChunk * readAheadBuffers, 3*readAheadChunk*readAheadBuffers + 17} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole":                 func(r io.Reader) io.Reader { return r },
			"bytes":                 iotest.OneByteReader,
			"halves":                iotest.HalfReader,
			"data and EOF together": iotest.DataErrReader,
		} {
			a := newReadAhead(wrap(bytes.NewReader(data)))
			if err := iotest.TestReader(a, data); err != nil {
				t.Errorf("%d bytes, %s: %v", size, name, err)
			}
			a.Close()
		}
	}
}

// TestReadAheadGivesTheErrorAfterTheBytes: an error of the reader (a
// corrupt zstd stream, the size limit) comes after every byte read before
// it, and again on the next reads.
func TestReadAheadGivesTheErrorAfterTheBytes(t *testing.T) {
	data := bytes.Repeat([]byte("entry,"), readAheadChunk/2)
	boom := errors.New("boom")
	a := newReadAhead(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)))
	defer a.Close()
	got, err := io.ReadAll(a)
	if !errors.Is(err, boom) || !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes, then %v; want them all, then %v", len(got), len(data), err, boom)
	}
	if n, err := a.Read(make([]byte, 8)); n != 0 || !errors.Is(err, boom) {
		t.Fatalf("read again: %d, %v; want 0, %v", n, err, boom)
	}
}

// endless counts its reads, and those after closed is set; it never ends.
type endless struct {
	reads, late atomic.Int64
	closed      atomic.Bool
}

func (e *endless) Read(p []byte) (int, error) {
	e.reads.Add(1)
	if e.closed.Load() {
		e.late.Add(1)
	}
	clear(p)
	return len(p), nil
}

// TestReadAheadCloseStopsReading: a consumer that stops early (a bad
// entry) closes the readAhead, which returns with its goroutine done and
// reads nothing after, however much was left, having read at most its
// buffers ahead.
func TestReadAheadCloseStopsReading(t *testing.T) {
	for _, read := range []int{0, 1, readAheadChunk * (readAheadBuffers + 2)} {
		r := &endless{}
		a := newReadAhead(r)
		if _, err := io.ReadFull(a, make([]byte, read)); err != nil {
			t.Fatal(err)
		}
		a.Close() // a goroutine not stopped would hang here
		r.closed.Store(true)
		time.Sleep(20 * time.Millisecond) // for a goroutine not waited for to read again
		if n := r.late.Load(); n != 0 {
			t.Fatalf("after %d bytes: %d reads after Close", read, n)
		}
		if n, most := r.reads.Load(), int64(read/readAheadChunk+readAheadBuffers+1); n > most {
			t.Fatalf("after %d bytes: %d reads of %d bytes, more than %d", read, n, readAheadChunk, most)
		}
	}
}
