package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// TestRetryDecidesOnTheNetErrorNotItsWords: whether an unreachable
// endpoint is tried again follows the type of the failure (a refused
// connection: never; one that could not be made for another reason: a
// read yes, and a ref put too, since it was certainly not applied),
// whatever words the backend's message uses, even ones that mention
// another cause.
func TestRetryDecidesOnTheNetErrorNotItsWords(t *testing.T) {
	// A refused dial as net/http reports it (storeerr's tests classify
	// real dials).
	dialErr := &url.Error{Op: "Get", URL: "http://127.0.0.1:9/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	refused, ok := storeerr.Unreachable(dialErr)
	if !ok || !refused.Refused {
		t.Fatalf("a refused dial is not a refused NetError: %v", dialErr)
	}
	// A dial that failed without a refusal (no route), as a NetError whose
	// cause does not say which: only the type tells.
	noRoute := &storeerr.NetError{Endpoint: "http://10.0.0.1", Reason: "no route to host", Err: errors.New("opaque SDK failure")}
	for _, words := range []string{
		"", // the NetError's own message
		"cannot reach the endpoint: connection refused",
		"the service could not be contacted",
		"connection reset by peer", // text of a cause that is retried
	} {
		for _, tc := range []struct {
			name        string
			cause       error
			readTries   int
			refPutTries int
		}{
			{"refused", refused, 1, 1},
			{"no route", noRoute, 5, 5},
		} {
			t.Run(fmt.Sprintf("%s/%q", tc.name, words), func(t *testing.T) {
				msg := words
				if msg == "" {
					msg = tc.cause.Error()
				}
				failure := fmt.Errorf("s3://b: %w", storeerr.New(msg, tc.cause))
				f := &fakeStore{fail: func(string, int) error { return failure }}
				var log logLines
				st := WithRetries(f, fastOptions(&log))
				if _, err := st.GetRef(t.Context(), "k"); !errors.Is(err, tc.cause) {
					t.Fatalf("GetRef = %v, want the failure", err)
				}
				if err := st.PutRef(t.Context(), &Ref{Key: "k"}); !errors.Is(err, tc.cause) {
					t.Fatalf("PutRef = %v, want the failure", err)
				}
				if got, want := [2]int{f.count("getref"), f.count("putref")}, [2]int{tc.readTries, tc.refPutTries}; got != want {
					t.Errorf("attempts (get ref, put ref) = %v, want %v", got, want)
				}
			})
		}
	}
	// And the words alone never make a failure final or transient.
	f := &fakeStore{fail: func(string, int) error {
		return storeerr.New("cannot reach http://h: connection refused", fmt.Errorf("read: %w", syscall.ECONNRESET))
	}}
	var log logLines
	if _, err := WithRetries(f, fastOptions(&log)).GetRef(t.Context(), "k"); err == nil || f.count("getref") != 5 {
		t.Errorf("a reset worded as a refusal: %d attempts, want 5", f.count("getref"))
	}
}
