// Package delayline is a TCP proxy that makes a connection behave like a
// long link: every chunk read from one side is written to the other Delay
// later, in both directions, so a round trip costs 2 x Delay and a
// transfer keeps the bandwidth-delay product in flight. It stands in for
// `tc netem delay` where that qdisc is missing; the rate limit comes from
// elsewhere (tbf on the link the proxy dials through).
//
// Each direction of a connection has a TCP-like window: at most Window
// bytes are in flight (read and not yet acknowledged, an acknowledgement
// coming back Delay after the bytes were delivered). A connection starts
// with InitialWindow bytes and grows by the bytes acknowledged, as TCP slow
// start does, so a single stream needs several round trips to fill the
// link and can never carry more than Window per round trip. There is no
// loss and no restart after idle.
//
//	p, err := delayline.Listen("127.0.0.1:0", "10.0.0.2:5000", delayline.Config{Delay: 20 * time.Millisecond})
//	// point the client at p.Addr()
package delayline

import (
	"net"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultWindow is a Linux TCP stream's largest window with the
	// default buffers (tcp_rmem max 6 MiB, about two thirds advertised).
	DefaultWindow = 4 << 20
	// DefaultInitialWindow is Linux's initial congestion window: 10
	// segments of 1448 bytes.
	DefaultInitialWindow = 10 * 1448
)

// chunkSize is the most read from a connection at once.
const chunkSize = 64 << 10

// Config is the link a Proxy imitates.
type Config struct {
	// Delay is the one-way delay of each direction.
	Delay time.Duration
	// Window is the most bytes in flight per direction of a connection.
	// Default DefaultWindow.
	Window int
	// InitialWindow is the window a connection starts with. Default
	// DefaultInitialWindow (never more than Window).
	InitialWindow int
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.InitialWindow <= 0 {
		c.InitialWindow = DefaultInitialWindow
	}
	c.InitialWindow = min(c.InitialWindow, c.Window)
	return c
}

// Proxy accepts connections and forwards each to its target through the
// delay line.
type Proxy struct {
	l      net.Listener
	target string
	cfg    Config

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// Listen starts a Proxy on addr that forwards every connection to target.
func Listen(addr, target string, cfg Config) (*Proxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l, target: target, cfg: cfg.withDefaults(), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the host:port clients connect to.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Close stops accepting, closes every open connection and waits for their
// goroutines.
func (p *Proxy) Close() error {
	err := p.l.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track records c as open (false: the proxy is closing; c was closed).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(client, server, p.cfg) }()
	go func() { defer wg.Done(); pipe(server, client, p.cfg) }()
	wg.Wait()
}

// chunk is bytes in flight, due at a time.
type chunk struct {
	b   []byte
	n   int
	due time.Time
}

// pipe forwards src to dst, each chunk cfg.Delay after it was read, with
// at most the window in flight. At src's end it half-closes dst; on a
// write error it closes both.
func pipe(src, dst net.Conn, cfg Config) {
	w := newWindow(cfg.InitialWindow, cfg.Window)
	inFlight := make(chan chunk, 1024)
	acks := make(chan chunk, 1024)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the acknowledgements coming back
		defer wg.Done()
		for a := range acks {
			time.Sleep(time.Until(a.due))
			w.give(a.n)
		}
	}()
	go func() { // the far end of the line
		defer wg.Done()
		defer close(acks)
		failed := false
		for c := range inFlight {
			if failed {
				continue
			}
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				w.close() // no more credit: the reader stops
				src.Close()
				dst.Close()
				continue
			}
			acks <- chunk{n: len(c.b), due: c.due.Add(cfg.Delay)}
		}
		if !failed {
			closeWrite(dst)
		}
	}()
	for {
		n := w.take(chunkSize)
		if n == 0 {
			break
		}
		b := make([]byte, n)
		m, err := src.Read(b)
		if m > 0 {
			inFlight <- chunk{b: b[:m], due: time.Now().Add(cfg.Delay)}
		}
		w.refund(n - m)
		if err != nil {
			break
		}
	}
	close(inFlight)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// window is the credit of one direction: bytes that may be read before
// earlier ones are acknowledged. It grows by what is acknowledged up to
// its maximum (slow start).
type window struct {
	mu          sync.Mutex
	cond        sync.Cond
	avail, size int
	max         int
	closed      bool
	peak        int // most bytes in flight at once (tests)
}

func newWindow(initial, max int) *window {
	w := &window{avail: initial, size: initial, max: max}
	w.cond.L = &w.mu
	return w
}

// take waits for credit and takes up to n bytes of it; 0 once closed.
func (w *window) take(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail == 0 && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return 0
	}
	n = min(n, w.avail)
	w.avail -= n
	w.peak = max(w.peak, w.size-w.avail)
	return n
}

// give returns n acknowledged bytes of credit and grows the window by as
// much, up to its maximum.
func (w *window) give(n int) {
	if n <= 0 {
		return
	}
	w.mu.Lock()
	grow := min(n, w.max-w.size)
	w.size += grow
	w.avail += n + grow
	w.mu.Unlock()
	w.cond.Broadcast()
}

// refund returns n bytes of credit taken and not used.
func (w *window) refund(n int) {
	w.mu.Lock()
	w.avail += n
	w.mu.Unlock()
	w.cond.Broadcast()
}

func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cond.Broadcast()
}
