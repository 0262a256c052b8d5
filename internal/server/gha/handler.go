package gha

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// Routes, at the root of cache-serve's port.
const (
	// V1Path is the base of version 1 (clients: ACTIONS_CACHE_URL=http://HOST:PORT/).
	V1Path = "/_apis/artifactcache/"
	// TwirpPath is the base of version 2's RPCs (ACTIONS_RESULTS_URL=http://HOST:PORT/).
	TwirpPath = "/twirp/github.actions.results.api.v1.CacheService/"
)

// DefaultURLTTL is how long a signed blob URL is good for.
const DefaultURLTTL = 6 * time.Hour

// Options configure a Handler.
type Options struct {
	// SigningKey signs the runtime tokens and the blob URLs; replicas
	// behind one Service share it. At least 32 bytes.
	SigningKey []byte
	// TokenTTL is how long a runtime token lasts (0: DefaultTokenTTL).
	TokenTTL time.Duration
	// URLTTL is how long a signed blob URL lasts (0: DefaultURLTTL).
	URLTTL time.Duration
	// Authenticate tells who asks for a runtime token, from the server's
	// own credentials (server.Server.Authenticate): an anonymous principal
	// without them. Required.
	Authenticate func(r *http.Request) (*server.Principal, error)
	// RecordUse records a download of the entry of a backing key, for the
	// GC (server.Server.RecordUse); nil: none.
	RecordUse func(ctx context.Context, key string)
	// ObserveLookup counts a lookup of a caller whose first read scope is
	// scope (server.Server.ObserveGHALookup); nil: none.
	ObserveLookup func(scope string, hit bool)
	// BaseURL is the URL clients reach the server at, for the URLs it
	// hands out ("https://cache.ci.svc:8080"); empty: the request's own
	// scheme and Host.
	BaseURL string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logf receives one line per failed request; nil is silent.
	Logf func(format string, args ...any)
}

// Handler serves both protocol versions and the token exchange over a
// Service.
type Handler struct {
	svc  *Service
	o    Options
	keys keys
}

// New returns the handler of svc.
func New(svc *Service, o Options) (*Handler, error) {
	if len(o.SigningKey) < 32 {
		return nil, errors.New("the GitHub Actions cache's signing key must have at least 32 bytes")
	}
	if o.Authenticate == nil {
		return nil, errors.New("gha.Options.Authenticate is required")
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.URLTTL <= 0 {
		o.URLTTL = DefaultURLTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.RecordUse == nil {
		o.RecordUse = func(context.Context, string) {}
	}
	if o.ObserveLookup == nil {
		o.ObserveLookup = func(string, bool) {}
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	return &Handler{svc: svc, o: o, keys: deriveKeys(o.SigningKey)}, nil
}

// Mux is where Register mounts the routes (an *http.ServeMux, a
// server.Server).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register mounts every route of the front end on m.
func (h *Handler) Register(m Mux) {
	m.Handle("POST "+httpapi.GHATokenPath, http.HandlerFunc(h.token))
	m.Handle("GET "+V1Path+"cache", h.v1(false, h.v1Lookup))
	m.Handle("POST "+V1Path+"caches", h.v1(true, h.v1Reserve))
	m.Handle("PATCH "+V1Path+"caches/{id}", h.v1(true, h.v1Chunk))
	m.Handle("POST "+V1Path+"caches/{id}", h.v1(true, h.v1Commit))
	m.Handle("POST "+TwirpPath+"{method}", http.HandlerFunc(h.twirp))
	m.Handle("PUT "+uploadPath+"{id}", http.HandlerFunc(h.blobPut))
	m.Handle("GET "+downloadPath+"{hex}", http.HandlerFunc(h.blobGet)) // and HEAD
}

// MintToken returns a runtime token for p (tests, and the token route).
func (h *Handler) MintToken(p *server.Principal) (string, time.Time, error) {
	return h.keys.mint(p, h.o.Now(), h.o.TokenTTL)
}

func (h *Handler) baseURL(r *http.Request) string {
	if h.o.BaseURL != "" {
		return h.o.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (h *Handler) logf(r *http.Request, status int, msg string) {
	if status >= 500 || status == http.StatusForbidden || status == http.StatusUnauthorized {
		h.o.Logf("warning: gha: %s %s: %d: %s", r.Method, r.URL.Path, status, msg)
	}
}

func oneLine(err error) string {
	return storeerr.Cut(storeerr.Scrub(storeerr.OneLine(err.Error())), 1000)
}

// token exchanges the server's credentials for a runtime token.
func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	p, err := h.o.Authenticate(r)
	fail := func(status int, code, msg string) {
		h.logf(r, status, msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(httpapi.ErrorBody{Error: httpapi.Error{Code: code, Message: msg}}) //nolint:errcheck // the client went away
	}
	switch {
	case errors.Is(err, server.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		fail(http.StatusServiceUnavailable, httpapi.CodeUnavailable, oneLine(err))
		return
	case errors.Is(err, server.ErrForbidden):
		fail(http.StatusForbidden, httpapi.CodeForbidden, oneLine(err))
		return
	case err != nil:
		fail(http.StatusUnauthorized, httpapi.CodeUnauthenticated, oneLine(err))
		return
	case p == nil || len(p.Read) == 0 && p.Write == "":
		fail(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "a runtime token needs credentials: send Authorization: Bearer with a static token or a ServiceAccount token")
		return
	}
	tok, exp, err := h.MintToken(p)
	if err != nil {
		fail(http.StatusInternalServerError, httpapi.CodeStore, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(httpapi.GHAToken{Token: tok, ExpiresAt: exp.UTC()}) //nolint:errcheck // the client went away
}

// principal verifies the runtime token of r.
func (h *Handler) principal(r *http.Request) (*server.Principal, error) {
	tok, has := server.BearerToken(r)
	if !has || tok == "" {
		return nil, fmt.Errorf("%w: no runtime token (Authorization: Bearer, from POST %s)", ErrBadToken, httpapi.GHATokenPath)
	}
	return h.keys.verify(tok, h.o.Now())
}

// errStatus maps a Service error to an HTTP status.
func errStatus(r *http.Request, err error) int {
	switch {
	case errors.Is(err, ErrExists):
		return http.StatusConflict
	case errors.Is(err, ErrNoUpload):
		return http.StatusNotFound
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrInvalid), errors.Is(err, store.ErrInvalidKey):
		return http.StatusBadRequest
	case errors.Is(err, ErrBadToken):
		return http.StatusUnauthorized
	case r.Context().Err() != nil:
		return http.StatusBadRequest
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadGateway // the backing store failed
}

// requestID is the x-ms-request-id of a blob answer (go-actions-cache
// logs it, and dereferences it).
func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func decodeJSON(r *http.Request, v any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: reading the body: %v", ErrInvalid, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: decoding the body: %v", ErrInvalid, err)
	}
	return nil
}
