// Package faultproxy is an HTTP proxy on 127.0.0.1 that stands in front of a
// real server (a registry, MinIO, fake-gcs-server, Azurite) in tests and
// injects the faults of a bad network, scripted per test: a reset
// connection, a stall, an error status with Retry-After, a truncated or
// corrupted response body, a slow link, an upload cut or corrupted on its
// way to the server.
//
// Every request is forwarded on its own connection to the server and
// answered with "Connection: close", so that a fault on one request never
// leaks into the next. A Rule matches requests by method and path pattern
// and fires on chosen occurrences; the proxy counts the requests it saw.
//
//	p := faultproxy.New(t, "http://127.0.0.1:9000")
//	p.Add(faultproxy.Rule{Method: "GET", Path: `/v1/blobs/`, Nth: 1, Fault: faultproxy.Reset, AfterBytes: 100})
//	// point the client at p.URL()
package faultproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what happens to a matching request.
type Fault int

const (
	// None forwards the request unchanged (a rule with None only counts).
	None Fault = iota
	// Reset closes the client's connection with a TCP RST: before
	// forwarding the request, or after AfterBytes bytes of the response
	// body when AfterBytes > 0 (the server then did the request).
	Reset
	// Stall sends nothing for StallFor (default: until the client gives
	// up), before forwarding the request, or after AfterBytes bytes of the
	// response body when AfterBytes > 0; then it closes the connection.
	Stall
	// Status answers Status (500, 502, 503, 429 ...) with Retry-After
	// set to RetryAfter when given, without forwarding the request.
	Status
	// Truncate forwards the request and sends the response headers (with
	// the server's Content-Length) and AfterBytes bytes of the body, then
	// closes the connection.
	Truncate
	// Corrupt forwards the request and flips one byte of the response
	// body: the one at offset AfterBytes.
	Corrupt
	// Throttle forwards the request and sends the response body at
	// BytesPerSecond.
	Throttle
	// ResetAfterForward forwards the request, so that the server does it,
	// then resets the connection before any byte of the response.
	ResetAfterForward
	// CutRequest forwards the request's headers and the first AfterBytes
	// bytes of its body, then closes the server's connection (the server
	// sees an upload end midway) and resets the client's.
	CutRequest
	// CorruptRequest forwards the request with the byte of its body at
	// offset AfterBytes flipped, and the server's answer unchanged.
	CorruptRequest
	// HoldRequest reads the whole request body from the client (Request.Held
	// then says so), forwards the headers and the first AfterBytes bytes,
	// holds the rest for StallFor and then sends it, whether or not the
	// client is still there: a request the network still carries, which
	// the server finishes after the client gave up on it.
	HoldRequest
)

var faultNames = map[Fault]string{None: "none", Reset: "reset", Stall: "stall", Status: "status",
	Truncate: "truncate", Corrupt: "corrupt", Throttle: "throttle", ResetAfterForward: "reset-after-forward",
	CutRequest: "cut-request", CorruptRequest: "corrupt-request", HoldRequest: "hold-request"}

func (f Fault) String() string { return faultNames[f] }

// Rule scripts a fault.
type Rule struct {
	// Method matches the request method; "" matches any.
	Method string
	// Path is a regular expression matched against the request path,
	// followed by "?" and the unescaped query when there is one (GCS
	// uploads name the object in the query); "" matches any.
	Path string
	// Nth is the first matching request (1-based) the fault hits; 0 or 1
	// is the first.
	Nth int
	// Times is how many matching requests, from the Nth on, get the fault;
	// 0 is one, a negative value is every one.
	Times int
	// Fault is what happens.
	Fault Fault
	// AfterBytes is the response body offset at which Reset, Stall,
	// Truncate and Corrupt act, and the request body offset at which
	// CutRequest, CorruptRequest and HoldRequest do.
	AfterBytes int64
	// StallFor is how long Stall sends nothing (0: until the client
	// closes the connection, or the proxy closes) and how long HoldRequest
	// holds the rest of the body.
	StallFor time.Duration
	// Status and RetryAfter are the answer of Status.
	Status     int
	RetryAfter string
	// BytesPerSecond is the bandwidth of Throttle.
	BytesPerSecond int

	re   *regexp.Regexp
	seen int
}

func (r *Rule) matches(req *http.Request) bool {
	return (r.Method == "" || r.Method == req.Method) && (r.re == nil || r.re.MatchString(target(req.URL)))
}

// target is what Rule.Path is matched against.
func target(u *url.URL) string {
	if u.RawQuery == "" {
		return u.Path
	}
	q, err := url.QueryUnescape(u.RawQuery)
	if err != nil {
		q = u.RawQuery
	}
	return u.Path + "?" + q
}

// fires counts a matching request and reports whether the fault hits it.
func (r *Rule) fires() bool {
	r.seen++
	first := max(r.Nth, 1)
	if r.seen < first {
		return false
	}
	if r.Times < 0 {
		return true
	}
	return r.seen < first+max(r.Times, 1)
}

// Request is a request the proxy saw.
type Request struct {
	// Path is the request's path, then "?" and its unescaped query.
	Method, Path string
	// Fault is the fault it got (None when forwarded unchanged).
	Fault Fault
	// Upstream is the status the server answered when the request was
	// forwarded (0: not forwarded, or no answer yet).
	Upstream int
	// Err says why forwarding the request got no answer from the server
	// (a server that answers before it read the body may close the
	// connection on it): with Upstream, it says the forward ended.
	Err string
	// Held says that HoldRequest read the whole body from the client and
	// sent the server its headers and first AfterBytes bytes: the rest is
	// on hold.
	Held bool
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	t      testing.TB
	l      net.Listener
	client *http.Client

	mu       sync.Mutex
	target   *url.URL
	rules    []*Rule
	requests []*Request
	closed   chan struct{}
	wg       sync.WaitGroup
}

// New starts a proxy in front of target (http://host:port) on a free
// 127.0.0.1 port; it stops when t ends. An empty target can be set later
// with SetTarget (to start a server that must know the proxy's address).
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{
		t: t, l: l, closed: make(chan struct{}),
		client: &http.Client{
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DisableCompression: true},
			// The client follows redirects itself, through the proxy.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if target != "" {
		p.SetTarget(target)
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// SetTarget sets the server the proxy forwards to. It must be a loopback
// http:// URL.
func (p *Proxy) SetTarget(target string) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) {
		p.t.Fatalf("faultproxy: target %q must be http://127.0.0.1:PORT (loopback only)", target)
	}
	p.mu.Lock()
	p.target = u
	p.mu.Unlock()
}

func isLoopback(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// URL is http:// and the proxy's host:port.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Add scripts a fault. Rules are tried in the order added; the first that
// matches a request and fires decides its fault (a rule that matches but
// does not fire still counts the request).
func (p *Proxy) Add(r Rule) {
	if r.Path != "" {
		re, err := regexp.Compile(r.Path)
		if err != nil {
			p.t.Fatalf("faultproxy: rule path %q: %v", r.Path, err)
		}
		r.re = re
	}
	p.mu.Lock()
	p.rules = append(p.rules, &r)
	p.mu.Unlock()
}

// Clear removes every rule and forgets the requests seen.
func (p *Proxy) Clear() {
	p.mu.Lock()
	p.rules, p.requests = nil, nil
	p.mu.Unlock()
}

// Requests returns the requests seen so far, in order of arrival.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.requests))
	for i, r := range p.requests {
		out[i] = *r
	}
	return out
}

// Count returns how many requests seen so far have method ("" for any) and
// a path that matches the regular expression path ("" for any), as Rule.Path.
func (p *Proxy) Count(method, path string) int {
	re := regexp.MustCompile(path)
	n := 0
	for _, r := range p.Requests() {
		if (method == "" || r.Method == method) && re.MatchString(r.Path) {
			n++
		}
	}
	return n
}

// Faults returns how many requests got a fault other than None.
func (p *Proxy) Faults() int {
	n := 0
	for _, r := range p.Requests() {
		if r.Fault != None {
			n++
		}
	}
	return n
}

// Close stops the proxy and ends the stalls in progress.
func (p *Proxy) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.l.Close()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

// decide records req and returns the rule that fires for it, if any.
func (p *Proxy) decide(req *http.Request) (*Rule, *url.URL, *Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var hit *Rule
	for _, r := range p.rules {
		if r.matches(req) && r.fires() && hit == nil && r.Fault != None {
			hit = r
		}
	}
	f := None
	if hit != nil {
		f = hit.Fault
	}
	seen := &Request{Method: req.Method, Path: target(req.URL), Fault: f}
	p.requests = append(p.requests, seen)
	return hit, p.target, seen
}

// handle serves one request on c and closes it.
func (p *Proxy) handle(c net.Conn) {
	defer c.Close()
	// A connection closed while a stall waits ends the stall.
	gone := make(chan struct{})
	var goneOnce sync.Once
	markGone := func() { goneOnce.Do(func() { close(gone) }) }
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	rule, target, seen := p.decide(req)
	if target == nil {
		writeStatus(c, http.StatusBadGateway, "", "faultproxy: no target set")
		return
	}
	f := None
	if rule != nil {
		f = rule.Fault
	}
	switch f {
	case Reset:
		if rule.AfterBytes == 0 {
			reset(c)
			return
		}
	case Stall:
		if rule.AfterBytes == 0 {
			go drain(req.Body, br, c, markGone)
			p.stall(rule.StallFor, gone)
			return
		}
	case Status:
		// A client that asked "Expect: 100-continue" sends no body before
		// a 100: the answer comes at once, as a server would send it.
		if !expectsContinue(req) {
			io.Copy(io.Discard, req.Body) //nolint:errcheck // the answer does not depend on it
		}
		writeStatus(c, rule.Status, rule.RetryAfter, fmt.Sprintf("faultproxy: injected %d", rule.Status))
		return
	}
	if expectsContinue(req) {
		// As a server does (the Azure SDK asks for it after a 429, 500 or
		// 503): without it the client waits a second before its body.
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return
		}
		req.Header.Del("Expect")
	}
	var reqBody io.Reader = req.Body
	switch f {
	case CutRequest:
		reqBody = &cutReader{r: req.Body, left: rule.AfterBytes}
	case CorruptRequest:
		reqBody = &corrupter{r: req.Body, at: rule.AfterBytes}
	case HoldRequest:
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		head := body[:min(int64(len(body)), max(rule.AfterBytes, 0))]
		reqBody = io.MultiReader(bytes.NewReader(head), &holdReader{rest: body[len(head):], d: rule.StallFor, p: p, seen: seen})
	}
	out, err := http.NewRequest(req.Method, target.String()+req.URL.RequestURI(), reqBody)
	if err != nil {
		writeStatus(c, http.StatusBadGateway, "", err.Error())
		return
	}
	out.Header = req.Header.Clone()
	out.Host = req.Host // signatures (SigV4) cover the Host the client used
	out.ContentLength = req.ContentLength
	out.TransferEncoding = req.TransferEncoding
	resp, err := p.client.Do(out)
	if f == CutRequest {
		// The transport closed the server's connection when the body was
		// cut; the client's ends as a network cut would end it.
		if err == nil {
			resp.Body.Close()
		}
		reset(c)
		return
	}
	if err != nil {
		p.mu.Lock()
		seen.Err = err.Error()
		p.mu.Unlock()
		writeStatus(c, http.StatusBadGateway, "", "faultproxy: "+err.Error())
		return
	}
	defer resp.Body.Close()
	p.mu.Lock()
	seen.Upstream = resp.StatusCode
	p.mu.Unlock()
	if f == ResetAfterForward {
		reset(c)
		return
	}
	resp.Close = true
	resp.Header.Set("Connection", "close")
	var body io.Reader = resp.Body
	switch f {
	case Reset, Stall, Truncate:
		body = &cutReader{r: resp.Body, left: rule.AfterBytes}
	case Corrupt:
		body = &corrupter{r: resp.Body, at: rule.AfterBytes}
	case Throttle:
		body = &throttle{r: resp.Body, bps: rule.BytesPerSecond, done: p.closed}
	}
	if err := writeResponse(c, resp, body); err != nil && !errors.Is(err, errCut) {
		return
	}
	switch f {
	case Reset:
		reset(c)
	case Stall:
		go drain(nil, br, c, markGone)
		p.stall(rule.StallFor, gone)
	}
}

func expectsContinue(req *http.Request) bool {
	return strings.EqualFold(req.Header.Get("Expect"), "100-continue")
}

// writeResponse writes resp's status and headers, then body, to c. The
// headers keep the server's Content-Length, so a short body is a truncation.
func writeResponse(c net.Conn, resp *http.Response, body io.Reader) error {
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "HTTP/1.1 %s\r\n", resp.Status)
	h := resp.Header.Clone()
	h.Del("Transfer-Encoding")
	chunked := resp.ContentLength < 0 && resp.Request.Method != http.MethodHead && bodyAllowed(resp.StatusCode)
	if chunked {
		h.Set("Transfer-Encoding", "chunked")
	} else if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	if err := h.Write(w); err != nil {
		return err
	}
	w.WriteString("\r\n")
	if err := w.Flush(); err != nil {
		return err
	}
	if resp.Request.Method == http.MethodHead || !bodyAllowed(resp.StatusCode) {
		return nil
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if chunked {
				fmt.Fprintf(w, "%x\r\n", n)
				w.Write(chunk) //nolint:errcheck // Flush reports it
				w.WriteString("\r\n")
			} else {
				w.Write(chunk) //nolint:errcheck // Flush reports it
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if chunked {
		w.WriteString("0\r\n\r\n")
	}
	return w.Flush()
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func writeStatus(c net.Conn, status int, retryAfter, msg string) {
	h := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n", status, http.StatusText(status), len(msg))
	if retryAfter != "" {
		h += "Retry-After: " + retryAfter + "\r\n"
	}
	io.WriteString(c, h+"\r\n"+msg) //nolint:errcheck // the client may be gone
}

// reset closes c with a TCP RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0) //nolint:errcheck // best effort: Close still closes
	}
	c.Close()
}

// drain reads what the client still sends (the request body, then
// nothing) and calls gone when the client closes the connection.
func drain(body io.Reader, br *bufio.Reader, c net.Conn, gone func()) {
	if body != nil {
		io.Copy(io.Discard, body) //nolint:errcheck // any error ends the drain below too
	}
	io.Copy(io.Discard, br) //nolint:errcheck // returns when c closes
	gone()
}

func (p *Proxy) stall(d time.Duration, gone <-chan struct{}) {
	var timeout <-chan time.Time
	if d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case <-gone:
	case <-timeout:
	case <-p.closed:
	}
}

// errCut ends a body where a fault cuts it: unlike io.EOF, it does not end
// a chunked body cleanly.
var errCut = errors.New("faultproxy: body cut")

// cutReader returns errCut after left bytes of r.
type cutReader struct {
	r    io.Reader
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// holdReader is the rest of a held body: its first Read marks the request
// held (the transport has taken the head before it) and waits d (or the
// proxy's close) before it gives rest.
type holdReader struct {
	rest []byte
	d    time.Duration
	p    *Proxy
	seen *Request
	held bool
}

func (h *holdReader) Read(b []byte) (int, error) {
	if !h.held {
		h.held = true
		h.p.mu.Lock()
		h.seen.Held = true
		h.p.mu.Unlock()
		h.p.stall(h.d, nil)
	}
	if len(h.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(b, h.rest)
	h.rest = h.rest[n:]
	return n, nil
}

// corrupter flips the bits of the byte at offset at.
type corrupter struct {
	r   io.Reader
	at  int64
	off int64
}

func (c *corrupter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.at >= c.off && c.at < c.off+int64(n) {
		p[c.at-c.off] ^= 0xff
	}
	c.off += int64(n)
	return n, err
}

// throttle delivers r at bps bytes per second, in pieces of a tenth of that.
type throttle struct {
	r    io.Reader
	bps  int
	done <-chan struct{}
}

func (t *throttle) Read(p []byte) (int, error) {
	piece := max(t.bps/10, 1)
	if len(p) > piece {
		p = p[:piece]
	}
	n, err := t.r.Read(p)
	if n > 0 {
		select {
		case <-time.After(time.Duration(n) * time.Second / time.Duration(max(t.bps, 1))):
		case <-t.done:
			return n, io.ErrClosedPipe
		}
	}
	return n, err
}
