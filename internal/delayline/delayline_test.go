package delayline

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// echo serves one connection: it sends back everything it reads, then
// closes.
func echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func TestRoundTrip(t *testing.T) {
	const delay = 10 * time.Millisecond
	p, err := Listen("127.0.0.1:0", echo(t), Config{Delay: delay, Window: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	data := make([]byte, 3<<20)
	rand.Read(data)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite() // the echo then sees EOF, and so do we
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, not the %d sent", len(got), len(data))
	}
	// Each byte went there and back: at least two delays, whatever the
	// machine's speed.
	if el := time.Since(start); el < 2*delay {
		t.Errorf("round trip took %v, less than 2 x %v", el, delay)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echo(t), Config{Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v", b, err)
	}
	p.Close() // returns once the connection's goroutines are done
	if n, err := c.Read(b); err == nil {
		t.Fatalf("read %d bytes after Close, want the connection closed", n)
	}
}

// TestWindowSlowStart: the window starts at its initial size, grows by
// what is acknowledged (doubling each round trip when all is), never past
// its maximum, and never lends more than it has.
func TestWindowSlowStart(t *testing.T) {
	w := newWindow(10, 100)
	var sizes []int
	for range 5 {
		got := 0
		for {
			w.mu.Lock()
			left := w.avail
			w.mu.Unlock()
			if left == 0 {
				break
			}
			got += w.take(7)
		}
		sizes = append(sizes, got)
		w.give(got) // the whole round trip is acknowledged
	}
	want := []int{10, 20, 40, 80, 100}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("bytes in flight per round trip %v, want %v", sizes, want)
		}
	}
	if w.peak != 100 {
		t.Errorf("peak in flight %d, want the maximum 100", w.peak)
	}
	// A refund (taken, not read) gives back credit without growing.
	w2 := newWindow(10, 100)
	w2.refund(w2.take(10))
	if w2.size != 10 || w2.avail != 10 {
		t.Errorf("after a refund: size %d avail %d, want 10 10", w2.size, w2.avail)
	}
	w2.close()
	if n := w2.take(5); n != 0 {
		t.Errorf("take on a closed window gave %d, want 0", n)
	}
}
