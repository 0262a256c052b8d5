package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/httpapi"
)

// HeaderRequestID names a request in the access log: the client's, when
// it sent a sane one, else one the server makes; the answer carries it.
const HeaderRequestID = "X-Request-Id"

// requestIDPattern is a request id the server takes from a client: short,
// and nothing that could forge a log line or a field.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// requestID is r's sane X-Request-Id, or a new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(HeaderRequestID); requestIDPattern.MatchString(id) {
		return id
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestInfo is what the handlers tell the access log about a request,
// through its context (see ServeHTTP).
type requestInfo struct {
	principal string
	errCode   string
	errMsg    string
}

type infoKey struct{}

// infoOf is r's requestInfo, or nil for a request that did not come
// through ServeHTTP.
func infoOf(r *http.Request) *requestInfo {
	i, _ := r.Context().Value(infoKey{}).(*requestInfo)
	return i
}

// routeOf is the route label of a ServeMux pattern: its path, without the
// method ("GET /v1/refs/{key}" is "/v1/refs/{key}"); none: "unmatched".
func routeOf(pattern string) string {
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	if pattern == "" {
		return "unmatched"
	}
	return pattern
}

// ServeHTTP implements http.Handler: it serves r, then counts it in the
// metrics and writes its access log line, even when the handler cut the
// answer (a panic is passed on once recorded).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	_, pattern := s.mux.Handler(r)
	route := routeOf(pattern)
	id := requestID(r)
	w.Header().Set(HeaderRequestID, id)
	info := &requestInfo{principal: "-"}
	cw := &countingWriter{ResponseWriter: w}
	body := &countingBody{rc: r.Body}
	if body.rc == nil {
		body.rc = http.NoBody
	}
	if body.rc != http.NoBody && r.ContentLength != 0 && s.o.BodyStallTimeout > 0 {
		body.guard = &stallGuard{rc: http.NewResponseController(w), timeout: s.o.BodyStallTimeout}
	}
	r2 := r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	r2.Body = body
	aborted := true
	defer func() {
		status := cw.status
		if status == 0 {
			status = http.StatusOK // what net/http sends for a handler that wrote nothing
		}
		d := time.Since(start)
		s.m.observeRequest(route, r.Method, status, d.Seconds(), body.n, cw.n)
		s.logRequest(r, id, route, status, info, body.n, cw.n, d, aborted)
	}()
	s.mux.ServeHTTP(cw, r2)
	aborted = false
}

// quietRoutes are logged at debug level only: probes and scrapes.
var quietRoutes = map[string]bool{httpapi.HealthPath: true, MetricsPath: true}

// logRequest writes the access log line of a request: never a token, the
// Authorization header or a query string; the path is the URL's path only.
func (s *Server) logRequest(r *http.Request, id, route string, status int, info *requestInfo, in, out int64, d time.Duration, aborted bool) {
	if s.o.AccessLog == nil {
		return
	}
	level := slog.LevelInfo
	switch {
	case quietRoutes[route]:
		level = slog.LevelDebug
	case status >= 500 || aborted:
		level = slog.LevelWarn
	}
	ctx := context.WithoutCancel(r.Context())
	if !s.o.AccessLog.Enabled(ctx, level) {
		return
	}
	path := r.URL.Path
	if len(path) > 256 {
		path = path[:256] + "..."
	}
	attrs := []slog.Attr{
		slog.String("id", id),
		slog.String("method", methodLabel(r.Method)),
		slog.String("route", route),
		slog.String("path", path),
		slog.Int("status", status),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", out),
		slog.Float64("duration_s", d.Seconds()),
		slog.String("principal", info.principal),
		slog.String("remote", r.RemoteAddr),
	}
	if info.errCode != "" {
		attrs = append(attrs, slog.String("error", info.errCode+": "+info.errMsg))
	}
	if aborted {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	s.o.AccessLog.LogAttrs(ctx, level, "request", attrs...)
}

// countingWriter counts the body bytes of an answer and keeps its status.
// Unwrap lets http.ResponseController reach the connection (Flush).
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 { // a 1xx is not the answer
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps the connection's fast copy (sendfile) when it has one.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		c.n += n
		return n, err
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// Unwrap is for http.ResponseController.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// countingBody counts the bytes read from a request body, each read
// under its stall guard until the body ends (after that the connection
// belongs to net/http again, which clears the deadline).
type countingBody struct {
	rc    io.ReadCloser
	n     int64
	guard *stallGuard
	ended bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	if !b.ended {
		b.guard.before()
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err != nil {
		b.ended = true
	}
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }
