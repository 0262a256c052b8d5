package storeerr_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// nxdomainResolver is a Go resolver whose every query goes to a DNS server
// on 127.0.0.1 that answers NXDOMAIN, so that resolving a name fails as it
// would for a missing host, without a packet leaving the machine. queries
// counts the queries it answered.
func nxdomainResolver(t *testing.T, queries *atomic.Int32) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			// The query with QR (response), RD and RA set, RCODE 3
			// (NXDOMAIN), and no answers: header and question echoed.
			resp := append([]byte(nil), buf[:n]...)
			resp[2] = 0x80 | resp[2]&0x01
			resp[3] = 0x80 | 3
			resp[6], resp[7], resp[8], resp[9], resp[10], resp[11] = 0, 0, 0, 0, 0, 0
			queries.Add(1)
			pc.WriteTo(resp, from)
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

// get makes a request with a client that dials through d.
func get(t *testing.T, d *net.Dialer, url string) error {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s succeeded", url)
	}
	return fmt.Errorf("operation error S3: GetObject,\n%w", err)
}

func TestUnreachableFromRealDials(t *testing.T) {
	addr := closedAddr(t)
	refused := get(t, &net.Dialer{}, "http://"+addr+"/bucket/key?sig=s3cr3t")
	var queries atomic.Int32
	dns := get(t, &net.Dialer{Resolver: nxdomainResolver(t, &queries)}, "https://nonexistent.invalid/bucket")
	if queries.Load() == 0 {
		t.Fatal("the name was not resolved by the local DNS server")
	}
	_, dialTimeout := (&net.Dialer{Deadline: time.Now().Add(-time.Second)}).Dial("tcp", addr)
	for _, tc := range []struct {
		name string
		err  error
		want storeerr.NetError
		msg  string
	}{
		{"refused", refused, storeerr.NetError{Endpoint: "http://" + addr, Refused: true, Reason: "connection refused"},
			"cannot reach http://" + addr + ": connection refused"},
		{"dns", dns, storeerr.NetError{Endpoint: "https://nonexistent.invalid", Host: "nonexistent.invalid", DNS: true, Reason: "no such host"},
			`cannot reach https://nonexistent.invalid: cannot resolve "nonexistent.invalid": no such host`},
		{"dial timeout", dialTimeout, storeerr.NetError{Endpoint: addr, Timeout: true, Reason: "connection timed out"},
			"cannot reach " + addr + ": connection timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ne, ok := storeerr.Unreachable(tc.err)
			if !ok {
				t.Fatalf("Unreachable(%v) = false", tc.err)
			}
			got := *ne
			got.Err = nil
			if got != tc.want {
				t.Errorf("Unreachable(%v)\n = %+v\nwant %+v", tc.err, got, tc.want)
			}
			if ne.Err != tc.err || !errors.Is(ne, tc.err) {
				t.Error("the NetError does not wrap the error it classifies")
			}
			if ne.Error() != tc.msg {
				t.Errorf("message %q, want %q", ne.Error(), tc.msg)
			}
			if errors.Is(ne, syscall.ECONNREFUSED) != tc.want.Refused {
				t.Errorf("errors.Is(ECONNREFUSED) = %v", !tc.want.Refused)
			}
			// Found again, as it is, through any wrapping.
			wrapped := fmt.Errorf("s3://b: get: %w", storeerr.New("whatever the words", ne))
			if again, ok := storeerr.Unreachable(wrapped); !ok || again != ne {
				t.Errorf("Unreachable(wrapped) = %v, %v; want the same NetError", again, ok)
			}
		})
	}
}

func TestUnreachableOfOtherShapes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // "" when not unreachable
	}{
		{"refused without a dial", fmt.Errorf("x: %w", syscall.ECONNREFUSED), "cannot reach the endpoint: connection refused"},
		{"no route", &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 443}, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, "cannot reach 10.0.0.1:443: no route to host"},
		{"dns timeout", &net.DNSError{Err: "i/o timeout", Name: "h.example", IsTimeout: true}, `cannot reach h.example: cannot resolve "h.example": i/o timeout`},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "h.example", IsNotFound: true}, `cannot reach h.example: cannot resolve "h.example": no such host`},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, ""},
		{"message only", errors.New("dial tcp 127.0.0.1:9: connect: connection refused"), ""},
		{"nil", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ne, ok := storeerr.Unreachable(tc.err)
			switch {
			case tc.want == "" && ok:
				t.Errorf("Unreachable(%v) = %v, want false", tc.err, ne)
			case tc.want != "" && !ok:
				t.Errorf("Unreachable(%v) = false", tc.err)
			case ok && ne.Error() != tc.want:
				t.Errorf("message %q, want %q", ne.Error(), tc.want)
			}
		})
	}
}
