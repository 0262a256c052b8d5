package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// DefaultMaxBodySize is the largest blob a PUT may carry unless
// Options.MaxBodySize says otherwise.
const DefaultMaxBodySize = 4 << 30

// DefaultAnonymousScope is the scope of requests without credentials,
// when the options let them read or write.
const DefaultAnonymousScope = "default"

// maxRefBody bounds the body of a ref PUT and of a MissingRequest.
const maxRefBody = 16 << 20

// statParallel is how many blobs a missing-blobs request or a ref PUT
// stats at once in the backing store.
const statParallel = 16

// Options configure a Server.
type Options struct {
	// Authenticator tells who sent a request with credentials; nil: every
	// request with credentials is refused, and only anonymous ones remain.
	Authenticator Authenticator
	// AnonymousScope is the scope anonymous requests read (and write)
	// when allowed; empty: DefaultAnonymousScope.
	AnonymousScope string
	// AllowUnauthenticatedReads lets requests without credentials read
	// blobs and the refs of AnonymousScope. Off by default.
	AllowUnauthenticatedReads bool
	// AllowUnauthenticatedWrites lets requests without credentials write
	// blobs and the refs of AnonymousScope. Off by default.
	AllowUnauthenticatedWrites bool
	// MaxBodySize is the largest blob a PUT may carry (413 above);
	// 0: DefaultMaxBodySize.
	MaxBodySize int64
	// Logf receives one line per failed request (never a token); nil:
	// nothing is logged.
	Logf func(format string, args ...any)
	// RecordUseEvery is how often, at most, the last-use record of a ref
	// is rewritten when the ref is read (docs/SERVE.md, Eviction); 0:
	// DefaultRecordUseEvery; negative: restores are not recorded. A store
	// without records (store.MetaStore: a registry) records nothing.
	RecordUseEvery time.Duration
	// Now is the clock of the last-use records and of the status page
	// (default time.Now).
	Now func() time.Time
	// AccessLog, when set, receives one line per request (accesslog.go);
	// a failed request's error is in its line, not in Logf.
	AccessLog *slog.Logger
	// DisableMetrics leaves GET /metrics out (the counters are kept).
	DisableMetrics bool
	// MaxConcurrentUploads is how many blob PUTs are received at once;
	// one more gets 429 with Retry-After. 0: DefaultMaxConcurrentUploads;
	// negative: no limit.
	MaxConcurrentUploads int
	// BodyStallTimeout cuts a request whose body sends nothing for that
	// long (limits.go); 0: DefaultBodyStallTimeout; negative: never.
	BodyStallTimeout time.Duration
	// StatusPage serves the status page at GET / (docs/SERVE.md): every
	// entry's key and size, to whoever reaches the server, no token asked.
	// Off: GET / is a 404 like any other unknown path.
	StatusPage bool
	// Metrics count the requests (nil: the server makes its own); pass the
	// same to the Collector (CollectorOptions.Metrics).
	Metrics *Metrics
	// Collector is the GC of the store, if any: the status page shows what
	// its next run would evict, and charts the store's size at each run.
	Collector *Collector
	// InternalRef, when set, says which backing keys are another front
	// end's bookkeeping (gha.Internal): the status page leaves them out.
	InternalRef func(key string) bool
	// NameRef, when set, gives the scope and the key the status page shows
	// for another front end's entry (gha.NameRef); ok false: a native ref.
	NameRef func(key string) (scope, name string, ok bool)
}

// Server is the HTTP API over a store (see the package doc).
type Server struct {
	st   store.Store
	o    Options
	anon Principal
	mux  *http.ServeMux
	used *usage // nil: restores are not recorded
	m    *Metrics
	// uploads holds a token per blob PUT in flight; nil: no limit.
	uploads chan struct{}

	lookups lookups
	status  *statusPage // nil: no status page
}

var _ http.Handler = (*Server)(nil)

// New returns the server of st.
func New(st store.Store, o Options) (*Server, error) {
	if o.AnonymousScope == "" {
		o.AnonymousScope = DefaultAnonymousScope
	}
	if err := ValidateScope(o.AnonymousScope); err != nil {
		return nil, fmt.Errorf("anonymous scope: %w", err)
	}
	if o.MaxBodySize <= 0 {
		o.MaxBodySize = DefaultMaxBodySize
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RecordUseEvery == 0 {
		o.RecordUseEvery = DefaultRecordUseEvery
	}
	if o.BodyStallTimeout == 0 {
		o.BodyStallTimeout = DefaultBodyStallTimeout
	}
	s := &Server{o: o, mux: http.NewServeMux(), m: o.Metrics}
	if s.m == nil {
		s.m = NewMetrics()
	}
	s.st = s.m.countErrors(st)
	switch {
	case o.MaxConcurrentUploads == 0:
		s.uploads = make(chan struct{}, DefaultMaxConcurrentUploads)
	case o.MaxConcurrentUploads > 0:
		s.uploads = make(chan struct{}, o.MaxConcurrentUploads)
	}
	if meta, ok := store.As[store.MetaStore](s.st); ok && o.RecordUseEvery > 0 {
		s.used = &usage{meta: meta, now: o.Now, every: o.RecordUseEvery, logf: o.Logf, sem: make(chan struct{}, recordParallel), written: map[string]time.Time{}}
	}
	s.anon.Name = "anonymous"
	if o.AllowUnauthenticatedReads || o.AllowUnauthenticatedWrites {
		s.anon.Read = []string{o.AnonymousScope}
	}
	if o.AllowUnauthenticatedWrites {
		s.anon.Write = o.AnonymousScope
	}
	s.mux.HandleFunc("GET "+httpapi.HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	if !o.DisableMetrics {
		s.mux.Handle("GET "+MetricsPath, s.m.Handler())
	}
	s.mux.HandleFunc("GET "+httpapi.BlobsPath+"{hex}", s.auth(readAccess, s.getBlob)) // and HEAD
	s.mux.HandleFunc("PUT "+httpapi.BlobsPath+"{hex}", s.auth(writeAccess, s.putBlob))
	s.mux.HandleFunc("POST "+httpapi.MissingPath, s.auth(readAccess, s.missingBlobs))
	s.mux.HandleFunc("GET "+httpapi.RefsPath+"{key}", s.auth(readAccess, s.getRef))
	s.mux.HandleFunc("PUT "+httpapi.RefsPath+"{key}", s.auth(writeAccess, s.putRef))
	s.mux.HandleFunc("GET "+httpapi.RefListPath, s.auth(readAccess, s.listRefs))
	if o.StatusPage {
		s.status = newStatusPage(st, o)
		s.mux.HandleFunc("GET /{$}", s.serveStatus)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, httpapi.CodeNotFound, fmt.Sprintf("no such API: %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// Metrics are the server's metrics, which a Collector of the same store
// may add its counts to (CollectorOptions.Metrics).
func (s *Server) Metrics() *Metrics { return s.m }

type access int

const (
	readAccess access = iota
	writeAccess
)

// principalKey is the context key of the request's Principal.
type principalKey struct{}

func principalOf(r *http.Request) *Principal { return r.Context().Value(principalKey{}).(*Principal) }

// auth runs h for requests whose principal has the access a: 401 for
// refused or missing credentials, 403 for a principal without it.
func (s *Server) auth(a access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var p *Principal
		var err error
		if s.o.Authenticator != nil {
			p, err = s.o.Authenticator.Authenticate(r)
		} else if _, has := BearerToken(r); has {
			err = fmt.Errorf("%w: this server takes no tokens", ErrUnauthenticated)
		}
		if err != nil {
			s.failAuth(w, r, err)
			return
		}
		anonymous := p == nil
		if anonymous {
			p = &s.anon
		}
		if info := infoOf(r); info != nil {
			info.principal = p.Name
		}
		ok := p.canRead()
		if a == writeAccess {
			ok = p.canWrite()
		}
		if !ok {
			verb := map[access]string{readAccess: "read", writeAccess: "write"}[a]
			if anonymous {
				w.Header().Set("WWW-Authenticate", `Bearer realm="tekton-cache"`)
				s.fail(w, r, http.StatusUnauthorized, httpapi.CodeUnauthenticated, "this server needs a token to "+verb+" (none was sent)")
				return
			}
			s.fail(w, r, http.StatusForbidden, httpapi.CodeForbidden, fmt.Sprintf("principal %q may not %s", p.Name, verb))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// failAuth answers an Authenticator's error: 503 when it could not tell
// (clients try again), 403 for credentials that may do nothing here, else
// 401.
func (s *Server) failAuth(w http.ResponseWriter, r *http.Request, err error) {
	msg := storeerr.OneLine(err.Error())
	switch {
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		s.fail(w, r, http.StatusServiceUnavailable, httpapi.CodeUnavailable, msg)
	case errors.Is(err, ErrForbidden):
		s.fail(w, r, http.StatusForbidden, httpapi.CodeForbidden, msg)
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="tekton-cache"`)
		s.fail(w, r, http.StatusUnauthorized, httpapi.CodeUnauthenticated, msg)
	}
}

// fail answers an error as JSON (httpapi.ErrorBody).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	msg = storeerr.Cut(storeerr.Scrub(storeerr.OneLine(msg)), 1000)
	who := "-"
	if p, ok := r.Context().Value(principalKey{}).(*Principal); ok {
		who = p.Name
	}
	if info := infoOf(r); info != nil && s.o.AccessLog != nil {
		info.errCode, info.errMsg = code, msg // in the request's line
	} else if status != http.StatusNotFound { // a miss is not a failure
		s.o.Logf("%s %s %s: %d %s: %s", who, r.Method, r.URL.Path, status, code, msg)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	h.Del("ETag")
	// A HEAD answer has no body: the header says it (one line, scrubbed).
	h.Set(httpapi.HeaderError, code+": "+msg)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		json.NewEncoder(w).Encode(httpapi.ErrorBody{Error: httpapi.Error{Code: code, Message: msg}}) //nolint:errcheck // the client went away
	}
}

// failStore answers the error err of the backing store.
func (s *Server) failStore(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, httpapi.CodeNotFound, "not found")
	case errors.Is(err, store.ErrInvalidKey):
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalidKey, err.Error())
	case errors.Is(err, store.ErrDamagedRef):
		s.fail(w, r, http.StatusConflict, httpapi.CodeDamagedRef, err.Error())
	case errors.Is(err, errors.ErrUnsupported):
		s.fail(w, r, http.StatusNotImplemented, httpapi.CodeUnsupported, err.Error())
	case r.Context().Err() != nil:
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, "request cancelled: "+err.Error())
	default:
		s.fail(w, r, http.StatusBadGateway, httpapi.CodeStore, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// blobDigest is the digest the path names, or "" after answering 400.
func (s *Server) blobDigest(w http.ResponseWriter, r *http.Request) digest.Digest {
	d := digest.Digest(digest.Algorithm + ":" + r.PathValue("hex"))
	if err := d.Validate(); err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, err.Error())
		return ""
	}
	return d
}

func setBlobHeaders(h http.Header, d digest.Digest, info store.BlobInfo) {
	h.Set("ETag", `"`+string(d)+`"`)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	if !info.Modified.IsZero() {
		h.Set("Last-Modified", info.Modified.UTC().Format(http.TimeFormat))
		h.Set(httpapi.HeaderModified, info.Modified.UTC().Format(time.RFC3339Nano))
	}
}

// getBlob answers HEAD and GET of a blob; GET takes a Range of one
// interval (bytes=N- or bytes=N-M).
func (s *Server) getBlob(w http.ResponseWriter, r *http.Request) {
	d := s.blobDigest(w, r)
	if d == "" {
		return
	}
	info, err := s.st.StatBlob(r.Context(), d)
	if err != nil {
		s.failStore(w, r, err)
		return
	}
	h := w.Header()
	setBlobHeaders(h, d, info)
	off, end := int64(0), info.Size // [off, end)
	partial := false
	if rg := r.Header.Get("Range"); rg != "" && r.Method == http.MethodGet {
		var ok bool
		off, end, ok = ParseRange(rg, info.Size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
			s.fail(w, r, http.StatusRequestedRangeNotSatisfiable, httpapi.CodeRangeInvalid, fmt.Sprintf("range %q of a blob of %d bytes", rg, info.Size))
			return
		}
		partial = true
	}
	h.Set("Content-Length", strconv.FormatInt(end-off, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	var rc io.ReadCloser
	if br, ok := store.As[store.BlobRanger](s.st); ok && off > 0 {
		rc, err = br.GetBlobRange(r.Context(), d, off)
	} else {
		rc, err = s.st.GetBlob(r.Context(), d)
		if err == nil && off > 0 {
			if _, err = io.CopyN(io.Discard, rc, off); err != nil {
				rc.Close()
			}
		}
	}
	if err != nil {
		s.failStore(w, r, err)
		return
	}
	defer rc.Close()
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end-1, info.Size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	// Clients check the digest of what they read; a blob that turns out
	// shorter than its size ends the answer early, which they see.
	if n, err := io.Copy(w, io.LimitReader(rc, end-off)); err != nil || n != end-off {
		s.o.Logf("%s %s: sent %d of %d bytes: %v", r.Method, r.URL.Path, n, end-off, err)
		panic(http.ErrAbortHandler) // cut the connection: the client must not take a short answer for a whole one
	}
}

// ParseRange reads "bytes=N-" or "bytes=N-M" of a blob of size bytes as
// the interval [off, end).
func ParseRange(v string, size int64) (off, end int64, ok bool) {
	spec, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	off, err := strconv.ParseInt(first, 10, 64)
	if err != nil || off < 0 || off >= size {
		return 0, 0, false
	}
	end = size
	if last != "" {
		l, err := strconv.ParseInt(last, 10, 64)
		if err != nil || l < off {
			return 0, 0, false
		}
		end = min(l+1, size)
	}
	return off, end, true
}

// putBlob takes a blob: Content-Length bytes that must hash to the digest
// of the URL. 201 once committed, 200 when the store holds it already,
// 400 (nothing kept) when the bytes are another blob's.
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request) {
	d := s.blobDigest(w, r)
	if d == "" {
		return
	}
	size := r.ContentLength
	switch {
	case size < 0:
		s.fail(w, r, http.StatusLengthRequired, httpapi.CodeLengthRequired, "a blob PUT needs a Content-Length")
		return
	case size > s.o.MaxBodySize:
		s.fail(w, r, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, fmt.Sprintf("a blob of %d bytes is over this server's limit of %d", size, s.o.MaxBodySize))
		return
	}
	done, ok := s.admitUpload(w, r)
	if !ok {
		return
	}
	defer done()
	// A blob the store holds at that size is not sent again: a client that
	// asked "Expect: 100-continue" never sends the body.
	if info, err := s.st.StatBlob(r.Context(), d); err == nil && info.Size == size {
		w.WriteHeader(http.StatusOK)
		return
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.failStore(w, r, err)
		return
	}
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, size)}
	err := s.keep(r.Context(), d, size, body)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusCreated)
	case body.err != nil && errors.Is(body.err, digest.ErrMismatch):
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeMismatch, fmt.Sprintf("the %d bytes sent are not blob %s: nothing kept", size, d.Short()))
	case body.err != nil:
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, "reading the body: "+body.err.Error())
	case errors.Is(err, digest.ErrMismatch):
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeMismatch, err.Error())
	default:
		s.failStore(w, r, err)
	}
}

// keep writes the size bytes of body as blob d: through a staged blob
// when the store has one (it hashes what is written, and Commit refuses
// other bytes), else through PutBlob. Either way the server checks the
// digest itself as the bytes stream: the backend's word is not needed.
func (s *Server) keep(ctx context.Context, d digest.Digest, size int64, body *bodyReader) error {
	v := digest.NewVerifier(body, d, size)
	sb, err := store.StageBlob(ctx, s.st)
	if errors.Is(err, errors.ErrUnsupported) {
		return s.st.PutBlob(ctx, d, size, &errReader{r: v, body: body})
	}
	if err != nil {
		return err
	}
	if _, err := io.Copy(sb, &errReader{r: v, body: body}); err != nil {
		sb.Abort()
		return err
	}
	return sb.Commit(ctx, d, size)
}

// bodyReader is a request body that records the first error reading it.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// errReader passes on a Verifier's reads and records its mismatch as the
// body's error, so that the answer blames the bytes, not the store.
type errReader struct {
	r    io.Reader
	body *bodyReader
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.body.err == nil {
		e.body.err = err
	}
	return n, err
}

// missingBlobs answers which blobs of a MissingRequest the store lacks.
func (s *Server) missingBlobs(w http.ResponseWriter, r *http.Request) {
	var req httpapi.MissingRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Digests) > httpapi.MaxMissing {
		s.fail(w, r, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, fmt.Sprintf("%d digests: at most %d a request", len(req.Digests), httpapi.MaxMissing))
		return
	}
	for _, d := range req.Digests {
		if err := d.Validate(); err != nil {
			s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, err.Error())
			return
		}
	}
	missing := make([]bool, len(req.Digests))
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(statParallel)
	for i, d := range req.Digests {
		g.Go(func() error {
			_, err := s.st.StatBlob(ctx, d)
			if errors.Is(err, store.ErrNotFound) {
				missing[i] = true
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		s.failStore(w, r, err)
		return
	}
	resp := httpapi.MissingResponse{Missing: []digest.Digest{}}
	for i, m := range missing {
		if m {
			resp.Missing = append(resp.Missing, req.Digests[i])
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// decode reads a JSON body of at most maxRefBody bytes into v, or answers 400.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRefBody))
	if err == nil {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, fmt.Sprintf("a body over %d bytes", maxRefBody))
			return false
		}
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, "decoding the body: "+err.Error())
		return false
	}
	return true
}

// getRef answers the ref of a key from the first of the caller's read
// scopes that has it, under the key the client asked for.
func (s *Server) getRef(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := store.ValidateKey(key); err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalidKey, err.Error())
		return
	}
	read := principalOf(r).Read
	for _, scope := range read {
		sk, err := ScopedKey(scope, key)
		if err != nil {
			continue // too long for this scope: no ref of it has that key
		}
		ref, err := s.st.GetRef(r.Context(), sk)
		if errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrDamagedRef) {
			continue
		}
		if err != nil {
			s.failStore(w, r, err)
			return
		}
		out := *ref
		out.Key = key
		data, err := json.Marshal(&out)
		if err != nil {
			s.fail(w, r, http.StatusInternalServerError, httpapi.CodeStore, err.Error())
			return
		}
		s.observeLookup(read[0], true)
		h := w.Header()
		h.Set(httpapi.HeaderScope, scope)
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		if _, err := w.Write(data); err != nil {
			return
		}
		// The answer is whole (its length is known): send it now, then record
		// the restore while the client goes on.
		http.NewResponseController(w).Flush() //nolint:errcheck // a recorder cannot flush; the answer goes at the end
		s.used.touch(r.Context(), sk)
		return
	}
	s.observeLookup(read[0], false) // auth let in only principals that read
	s.fail(w, r, http.StatusNotFound, httpapi.CodeNotFound, fmt.Sprintf("no ref %q", key))
}

// putRef publishes a ref in the caller's write scope, once every blob it
// names is in the store at its size.
func (s *Server) putRef(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	scope := principalOf(r).Write
	sk, err := ScopedKey(scope, key)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalidKey, err.Error())
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRefBody))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, "reading the body: "+err.Error())
		return
	}
	ref, err := store.DecodeRef(key, data)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalid, err.Error())
		return
	}
	if status, code, msg := s.checkBlobs(r.Context(), ref); status != 0 {
		s.fail(w, r, status, code, msg)
		return
	}
	ref.Key = sk
	if err := s.st.PutRef(r.Context(), ref); err != nil {
		s.failStore(w, r, err)
		return
	}
	w.Header().Set(httpapi.HeaderScope, scope)
	w.WriteHeader(http.StatusCreated)
}

// checkBlobs checks that every blob ref names is in the store at the size
// the ref says; else the answer to give.
func (s *Server) checkBlobs(ctx context.Context, ref *store.Ref) (status int, code, msg string) {
	descs := append([]format.Descriptor{ref.Index}, ref.Packs...)
	var mu sync.Mutex
	set := func(st int, c, m string) {
		mu.Lock()
		defer mu.Unlock()
		if status == 0 {
			status, code, msg = st, c, m
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statParallel)
	for _, desc := range descs {
		g.Go(func() error {
			info, err := s.st.StatBlob(gctx, desc.Digest)
			switch {
			case errors.Is(err, store.ErrNotFound):
				set(http.StatusFailedDependency, httpapi.CodeMissingBlob, fmt.Sprintf("ref %q names blob %s, which the store lacks: put it first", ref.Key, desc.Digest.Short()))
			case err != nil:
				return err
			case info.Size != desc.Size:
				set(http.StatusFailedDependency, httpapi.CodeMissingBlob, fmt.Sprintf("ref %q names blob %s of %d bytes; the store's is %d", ref.Key, desc.Digest.Short(), desc.Size, info.Size))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return http.StatusBadGateway, httpapi.CodeStore, err.Error()
	}
	return status, code, msg
}

// listRefs answers the keys under a prefix in the caller's read scopes: a
// key in several is listed once, with the scope a read finds it in.
func (s *Server) listRefs(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if err := store.ValidatePrefix(prefix); err != nil {
		s.fail(w, r, http.StatusBadRequest, httpapi.CodeInvalidKey, err.Error())
		return
	}
	out := httpapi.RefList{Refs: []httpapi.RefListItem{}}
	seen := map[string]bool{}
	rl, timed := store.As[store.RefLister](s.st)
	for _, scope := range principalOf(r).Read {
		sp := scopedPrefix(scope, prefix)
		var infos []store.RefInfo
		var err error
		if timed {
			infos, err = rl.ListRefInfo(r.Context(), sp)
		} else {
			var keys []string
			keys, err = s.st.ListRefs(r.Context(), sp)
			for _, k := range keys {
				infos = append(infos, store.RefInfo{Key: k})
			}
		}
		if err != nil {
			s.failStore(w, r, err)
			return
		}
		for _, in := range infos {
			key, ok := unscope(scope, in.Key)
			if !ok || seen[key] {
				continue
			}
			seen[key] = true
			out.Refs = append(out.Refs, httpapi.RefListItem{Key: key, Scope: scope, Modified: in.Modified})
		}
	}
	writeJSON(w, http.StatusOK, out)
}
