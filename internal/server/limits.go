package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/httpapi"
)

// DefaultMaxConcurrentUploads is how many blob PUTs a Server receives at
// once unless Options.MaxConcurrentUploads says otherwise.
const DefaultMaxConcurrentUploads = 64

// DefaultBodyStallTimeout is how long a request body may send nothing
// before the server cuts the request (Options.BodyStallTimeout).
const DefaultBodyStallTimeout = time.Minute

// admitUpload takes one of the upload slots, or answers 429 with
// Retry-After (the body unread: a client that asked "Expect:
// 100-continue" never sends it) and returns false. The caller calls done
// once the upload is over.
func (s *Server) admitUpload(w http.ResponseWriter, r *http.Request) (done func(), ok bool) {
	if s.uploads != nil {
		select {
		case s.uploads <- struct{}{}:
		default:
			s.m.throttled.Inc()
			w.Header().Set("Retry-After", "1")
			s.fail(w, r, http.StatusTooManyRequests, httpapi.CodeTooManyRequests, fmt.Sprintf("%d uploads in flight, this server's limit: try again in a second", cap(s.uploads)))
			return nil, false
		}
	}
	s.m.uploads.Inc()
	return func() {
		s.m.uploads.Dec()
		if s.uploads != nil {
			<-s.uploads
		}
	}, true
}

// stallGuard cuts the request of a body that sends nothing for timeout:
// each read pushes the connection's read deadline that far ahead, so a
// client that trickles a blob (or stops halfway) cannot hold an upload
// slot for ever, while a large upload that keeps moving takes as long as
// it needs. Where the writer cannot set deadlines (a recorder), nothing
// changes.
type stallGuard struct {
	rc      *http.ResponseController
	timeout time.Duration
	off     bool
}

func (g *stallGuard) before() {
	if g == nil || g.off {
		return
	}
	if err := g.rc.SetReadDeadline(time.Now().Add(g.timeout)); err != nil {
		g.off = true
	}
}
