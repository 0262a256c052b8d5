package storeerr

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
)

// NetError is an endpoint that could not be reached: no connection was
// made, so the request was certainly not applied. It wraps the error it
// classifies, so errors.Is(err, syscall.ECONNREFUSED) holds through it too.
type NetError struct {
	// Endpoint is what could not be reached: scheme://host of the request
	// (never its path or query, which may hold a SAS token), else the
	// address or name dialled; "" when unknown.
	Endpoint string
	// Host is the name that did not resolve (DNS only).
	Host string
	// Refused: nothing listens there (ECONNREFUSED). Retrying only delays
	// the error.
	Refused bool
	// DNS: the host name did not resolve.
	DNS bool
	// Timeout: connecting (or resolving) timed out.
	Timeout bool
	// Reason says why in a few words: "connection refused", "no such
	// host", "no route to host", "connection timed out" or the system's.
	Reason string
	// Err is the error classified.
	Err error
}

// Error describes the failure as "cannot reach http://127.0.0.1:9000:
// connection refused" or "cannot reach https://h: cannot resolve "h": no
// such host".
func (e *NetError) Error() string {
	where := e.Endpoint
	if where == "" {
		where = "the endpoint"
	}
	if e.DNS {
		return fmt.Sprintf("cannot reach %s: cannot resolve %q: %s", where, e.Host, e.Reason)
	}
	return fmt.Sprintf("cannot reach %s: %s", where, e.Reason)
}

// Unwrap returns the error classified.
func (e *NetError) Unwrap() error { return e.Err }

// Unreachable classifies err as an endpoint that cannot be reached (a host
// name that does not resolve, a refused connection, a dial that failed or
// timed out) and returns that as a *NetError whose Err is err; a *NetError
// already in err's chain is returned as it is. It returns false for every
// other error, including one of a connection that was made and then broke.
func Unreachable(err error) (*NetError, bool) {
	if err == nil {
		return nil, false
	}
	var ne *NetError
	if errors.As(err, &ne) {
		return ne, true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		why := "no such host"
		if !dnsErr.IsNotFound && dnsErr.Err != "" {
			why = dnsErr.Err
		}
		return &NetError{Endpoint: endpoint(err, dnsErr.Name), Host: dnsErr.Name, DNS: true, Timeout: dnsErr.IsTimeout, Reason: why, Err: err}, true
	}
	var opErr *net.OpError
	isDial := errors.As(err, &opErr) && opErr.Op == "dial"
	refused := errors.Is(err, syscall.ECONNREFUSED)
	if !isDial && !refused {
		return nil, false
	}
	addr := ""
	if opErr != nil && opErr.Addr != nil {
		addr = opErr.Addr.String()
	}
	ne = &NetError{Endpoint: endpoint(err, addr), Refused: refused, Timeout: isDial && opErr.Timeout(), Err: err}
	switch {
	case refused:
		ne.Reason = "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		ne.Reason = "no route to host"
	case ne.Timeout:
		ne.Reason = "connection timed out"
	case opErr.Err == nil:
		ne.Reason = "dial failed"
	default:
		ne.Reason = opErr.Err.Error()
		var se *os.SyscallError
		if errors.As(opErr.Err, &se) {
			ne.Reason = se.Err.Error()
		}
	}
	return ne, true
}

// endpoint returns scheme://host of the request that failed, or fallback.
func endpoint(err error, fallback string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	return fallback
}
