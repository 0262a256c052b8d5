package faultproxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
)

// upstream serves data at every path and records the PUT bodies it got.
func upstream(t *testing.T, data []byte) (*httptest.Server, *putLog) {
	puts := &putLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			b, _ := io.ReadAll(r.Body)
			puts.mu.Lock()
			puts.bodies = append(puts.bodies, string(b))
			puts.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.Header().Set("X-Upstream", "yes")
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv, puts
}

type putLog struct {
	mu     sync.Mutex
	bodies []string
}

func (l *putLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bodies...)
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func randomData(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestForwardsAndCounts(t *testing.T) {
	data := randomData(t, 100_000)
	srv, puts := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	for range 3 {
		resp, body, err := get(t, http.DefaultClient, p.URL()+"/v2/blobs/x?q=1")
		if err != nil || !bytes.Equal(body, data) || resp.Header.Get("X-Upstream") != "yes" {
			t.Fatalf("GET through the proxy: %v, %d bytes, headers %v", err, len(body), resp.Header)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/v2/refs/k", strings.NewReader("hello"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := puts.get(); len(got) != 1 || got[0] != "hello" {
		t.Fatalf("upstream got PUTs %q", got)
	}
	if n := p.Count("GET", "^/v2/blobs/"); n != 3 {
		t.Fatalf("Count(GET blobs) = %d, want 3", n)
	}
	if n := p.Count("", ""); n != 4 {
		t.Fatalf("Count(all) = %d, want 4", n)
	}
	if n := p.Count("GET", `blobs/x\?q=1$`); n != 3 {
		t.Fatalf("Count(GET with query) = %d, want 3", n)
	}
	if p.Faults() != 0 {
		t.Fatalf("Faults = %d with no rule", p.Faults())
	}
}

func TestNthOccurrence(t *testing.T) {
	srv, _ := upstream(t, []byte("ok"))
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Method: "GET", Path: "^/a$", Nth: 2, Times: 2, Fault: faultproxy.Status, Status: 503})
	var got []int
	for _, path := range []string{"/a", "/b", "/a", "/a", "/a"} {
		resp, _, err := get(t, http.DefaultClient, p.URL()+path)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.StatusCode)
	}
	want := []int{200, 200, 503, 503, 200}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses = %v, want %v", got, want)
		}
	}
}

func TestStatusRetryAfter(t *testing.T) {
	srv, _ := upstream(t, []byte("ok"))
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Status, Status: 429, RetryAfter: "3"})
	resp, _, err := get(t, http.DefaultClient, p.URL()+"/x")
	if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("got %v %v", resp, err)
	}
	if p.Count("GET", "/x") != 1 || p.Faults() != 1 {
		t.Fatalf("requests %v", p.Requests())
	}
}

func TestResetBeforeAndAfterBytes(t *testing.T) {
	data := randomData(t, 200_000)
	srv, _ := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Path: "^/now$", Fault: faultproxy.Reset})
	if _, _, err := get(t, http.DefaultClient, p.URL()+"/now"); err == nil {
		t.Fatal("GET of a reset connection succeeded")
	}
	for _, q := range []string{"", "?chunked=1"} {
		resetAfter(t, p, q, data)
	}
}

func resetAfter(t *testing.T, p *faultproxy.Proxy, query string, data []byte) {
	p.Add(faultproxy.Rule{Path: "^/later", Fault: faultproxy.Reset, AfterBytes: 50_000})
	resp, body, err := get(t, http.DefaultClient, p.URL()+"/later"+query)
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("headers should arrive before the reset: %v %v", resp, err)
	}
	if err == nil || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)) {
		t.Fatalf("reading a reset body: %v, want a reset", err)
	}
	if len(body) > 50_000 || !bytes.Equal(body, data[:len(body)]) {
		t.Fatalf("got %d bytes before the reset, want at most 50000 correct ones", len(body))
	}
}

func TestTruncate(t *testing.T) {
	data := randomData(t, 100_000)
	srv, _ := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Truncate, AfterBytes: 1234})
	resp, body, err := get(t, http.DefaultClient, p.URL()+"/x")
	if resp == nil || resp.ContentLength != int64(len(data)) {
		t.Fatalf("want the server's Content-Length: %v", resp)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(body, data[:1234]) {
		t.Fatalf("truncated read: %d bytes, %v; want 1234 and unexpected EOF", len(body), err)
	}
}

func TestCorrupt(t *testing.T) {
	data := randomData(t, 10_000)
	srv, _ := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Corrupt, AfterBytes: 777})
	_, body, err := get(t, http.DefaultClient, p.URL()+"/x")
	if err != nil || len(body) != len(data) {
		t.Fatalf("corrupt read: %d bytes, %v", len(body), err)
	}
	diff := 0
	for i := range body {
		if body[i] != data[i] {
			diff++
			if i != 777 || body[i] != data[i]^0xff {
				t.Fatalf("byte %d differs, want only 777 flipped", i)
			}
		}
	}
	if diff != 1 {
		t.Fatalf("%d bytes differ, want 1", diff)
	}
}

func TestStallUntilClientGivesUp(t *testing.T) {
	srv, _ := upstream(t, randomData(t, 1000))
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Stall})
	c := &http.Client{Timeout: 300 * time.Millisecond}
	start := time.Now()
	if _, _, err := get(t, c, p.URL()+"/x"); err == nil {
		t.Fatal("a stalled GET succeeded")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("stalled GET ended after %v, want the client's 300 ms", d)
	}
	// The next request goes through: the rule fired once.
	if _, body, err := get(t, http.DefaultClient, p.URL()+"/x"); err != nil || len(body) != 1000 {
		t.Fatalf("after the stall: %d bytes, %v", len(body), err)
	}
}

func TestStallAfterBytesForAWhile(t *testing.T) {
	data := randomData(t, 100_000)
	srv, _ := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Stall, AfterBytes: 10_000, StallFor: 200 * time.Millisecond})
	start := time.Now()
	_, body, err := get(t, http.DefaultClient, p.URL()+"/x")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("the stall lasted %v, want 200 ms", d)
	}
	if err == nil || len(body) != 10_000 {
		t.Fatalf("after a stall the connection closes: %d bytes, %v", len(body), err)
	}
}

func TestThrottle(t *testing.T) {
	data := randomData(t, 20_000)
	srv, _ := upstream(t, data)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Fault: faultproxy.Throttle, BytesPerSecond: 50_000})
	start := time.Now()
	_, body, err := get(t, http.DefaultClient, p.URL()+"/x")
	d := time.Since(start)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("throttled read: %d bytes, %v", len(body), err)
	}
	if d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("20 kB at 50 kB/s took %v, want about 400 ms", d)
	}
}

func TestResetAfterForwardDoesTheRequest(t *testing.T) {
	srv, puts := upstream(t, nil)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.ResetAfterForward})
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/ref", strings.NewReader("v1"))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("PUT answered despite the reset")
	}
	if got := puts.get(); len(got) != 1 || got[0] != "v1" {
		t.Fatalf("the server should have done the PUT: %q", got)
	}
}

func TestLoopbackOnly(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { recover() }()
		faultproxy.New(ft, "http://192.0.2.1:80")
	}()
	if !ft.failed {
		t.Fatal("a non-loopback target was accepted")
	}
}

type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(string, ...any) { f.failed = true; panic("fatal") }

// TestExpectContinue: a client that sends "Expect: 100-continue" gets its
// 100 at once, as from a server, not after its one-second wait.
func TestExpectContinue(t *testing.T) {
	srv, puts := upstream(t, nil)
	p := faultproxy.New(t, srv.URL)
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/obj", strings.NewReader("body"))
	req.Header.Set("Expect", "100-continue")
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp.Body.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PUT took %v: the proxy did not answer 100 Continue", d)
	}
	if got := puts.get(); len(got) != 1 || got[0] != "body" {
		t.Fatalf("upstream got %q", got)
	}
}

// TestCutRequest: the server gets the first AfterBytes bytes of an upload
// and then the end of its connection; the client gets a reset.
func TestCutRequest(t *testing.T) {
	data := randomData(t, 100_000)
	srv, puts := upstream(t, nil)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.CutRequest, AfterBytes: 5000})
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/obj", bytes.NewReader(data))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a cut upload was answered %d", resp.StatusCode)
	}
	// The server may still be reading when the client's reset arrives.
	for i := 0; len(puts.get()) == 0; i++ {
		if i == 2000 {
			t.Fatal("the server never got the cut upload")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := puts.get(); len(got) != 1 || got[0] != string(data[:5000]) {
		t.Fatalf("the server got %d uploads; want one of the first 5000 bytes", len(got))
	}
	if r := p.Requests(); len(r) != 1 || r[0].Fault != faultproxy.CutRequest || r[0].Upstream != 0 {
		t.Fatalf("requests seen: %+v", r)
	}
}

// TestCorruptRequest: the server gets the upload with one byte flipped,
// and the client the server's answer.
func TestCorruptRequest(t *testing.T) {
	data := randomData(t, 10_000)
	srv, puts := upstream(t, nil)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.CorruptRequest, AfterBytes: 4321})
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/obj", bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp.Body.Close()
	want := bytes.Clone(data)
	want[4321] ^= 0xff
	if got := puts.get(); len(got) != 1 || got[0] != string(want) {
		t.Fatalf("the server got %d uploads; want one with byte 4321 flipped", len(got))
	}
}

// TestHoldRequest: the client's whole upload is read at once, and the
// server gets all of it after the hold, although the client gave up on it.
func TestHoldRequest(t *testing.T) {
	data := randomData(t, 100_000)
	srv, puts := upstream(t, nil)
	p := faultproxy.New(t, srv.URL)
	p.Add(faultproxy.Rule{Method: "PUT", Fault: faultproxy.HoldRequest, AfterBytes: 5000, StallFor: 300 * time.Millisecond})
	req, _ := http.NewRequest(http.MethodPut, p.URL()+"/obj", bytes.NewReader(data))
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a held upload was answered %d before the client gave up", resp.StatusCode)
	}
	if r := p.Requests(); len(r) != 1 || !r[0].Held {
		t.Fatalf("requests seen when the client gave up: %+v; want one held", r)
	}
	for i := 0; len(puts.get()) == 0; i++ {
		if i == 2000 {
			t.Fatal("the server never got the held upload")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := puts.get(); len(got) != 1 || got[0] != string(data) {
		t.Fatalf("the server got %d uploads; want the whole one", len(got))
	}
}

// TestForwardWithNoAnswer: a server that closes the connection without an
// answer leaves the request's Err set (Upstream stays 0), so that a test
// waiting for the forward to end does not wait for ever.
func TestForwardWithNoAnswer(t *testing.T) {
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
			c.Close()
		}
	}()
	p := faultproxy.New(t, "http://"+l.Addr().String())
	resp, err := http.Get(p.URL() + "/obj")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a forward with no answer was answered %d, want 502", resp.StatusCode)
	}
	if r := p.Requests(); len(r) != 1 || r[0].Upstream != 0 || r[0].Err == "" {
		t.Fatalf("requests seen = %+v; want one with no upstream status and an Err", r)
	}
}
