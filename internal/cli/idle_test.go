package cli

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/memory"
)

// trickleStore serves every blob one byte at a time, a pause between bytes.
type trickleStore struct {
	store.Store
	pause time.Duration
}

// Unwrap implements store.Unwrapper.
func (s trickleStore) Unwrap() store.Store { return s.Store }

type trickle struct {
	data  []byte
	pause time.Duration
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(t.pause)
	p[0], t.data = t.data[0], t.data[1:]
	return 1, nil
}

func (s trickleStore) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, err := s.Store.GetBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	return io.NopCloser(&trickle{data: data, pause: s.pause}), err
}

// TestIdleWatchLetsSlowTransfersGoOn: a store that is slow but sends bytes
// is not idle; the watch fires only when nothing moves.
func TestIdleWatchLetsSlowTransfersGoOn(t *testing.T) {
	mem := memory.NewStore("t")
	data := []byte("0123456789")
	d := digest.FromBytes(data)
	if err := mem.PutBlob(context.Background(), d, int64(len(data)), bytesReader(data)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, w, stop := watchIdle(trickleStore{Store: mem, pause: 100 * time.Millisecond}, 400*time.Millisecond, cancel)
	rc, err := st.GetBlob(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	stop()
	if err != nil || string(got) != string(data) || w.fired.Load() || ctx.Err() != nil {
		t.Fatalf("a slow transfer (1 s, a byte every 100 ms) was cut: %q %v fired=%v", got, err, w.fired.Load())
	}
	// With nothing moving, the watch cancels the command.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	st, w, stop = watchIdle(trickleStore{Store: mem, pause: time.Second}, 300*time.Millisecond, cancel2)
	defer stop()
	rc, err = st.GetBlob(ctx2, d)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	rc.Read(buf) // a second without a byte
	select {
	case <-ctx2.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the idle watch did not fire")
	}
	if !w.fired.Load() || !errors.Is(ctx2.Err(), context.Canceled) {
		t.Fatalf("fired=%v err=%v", w.fired.Load(), ctx2.Err())
	}
	rc.Close()
}

func bytesReader(b []byte) io.Reader { return &trickle{data: append([]byte(nil), b...)} }
