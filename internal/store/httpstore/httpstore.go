// Package httpstore is the client of the native HTTP store API
// (docs/HTTP.md) that `cache-serve` answers: a store.Store over
// http:// and https:// URLs.
//
// # URLs
//
//	http://cache.ns.svc:8080          the server's root
//	https://cache.example/team        a server behind a path prefix
//
// The bearer token comes from the environment, never from the URL:
// CACHE_TOKEN holds it, or CACHE_TOKEN_FILE names a file that does (a
// projected ServiceAccount token, re-read as it rotates). No token: the
// requests are anonymous, which a server allows only when told to.
//
// A URL's scheme is what is used: http:// is plain HTTP (a Service inside
// the cluster), and store.Options.Insecure only lets https:// accept a
// certificate it cannot verify.
//
// It is a store.BlobRanger (a read resumes with a Range) and a
// store.RefLister (the server lists keys with their times); it cannot
// delete, stage or list blobs. MissingBlobs asks which of many blobs the
// server lacks in one request.
package httpstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/httpapi"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// The environment variables that give the token.
const (
	TokenEnv     = "CACHE_TOKEN"
	TokenFileEnv = "CACHE_TOKEN_FILE"
)

// tokenFileTTL is how long a token read from a file is used before the
// file is read again (projected tokens rotate).
const tokenFileTTL = 30 * time.Second

// maxRefSize bounds a ref or a listing read (store.DecodeRef refuses more).
const maxRefSize = 16 << 20

// Store is the client of one server.
type Store struct {
	base   string // scheme://host[/path], no trailing slash
	name   string // base, for logs
	client *http.Client
	token  *tokenSource
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.BlobRanger = (*Store)(nil)
	_ store.RefLister  = (*Store)(nil)
)

// Open implements store.Opener for http:// and https:// URLs.
func Open(_ context.Context, u *url.URL, opts store.Options) (store.Store, error) {
	if u.Host == "" {
		return nil, store.BadURL(fmt.Errorf("store URL %q has no host: write %s://HOST[:PORT]", u.Redacted(), u.Scheme))
	}
	if u.User != nil {
		return nil, store.BadURL(fmt.Errorf("store URL %q: credentials do not go in the URL: set %s or %s", u.Redacted(), TokenEnv, TokenFileEnv))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, store.BadURL(fmt.Errorf("store URL %q: an http store takes no query parameters", u.Redacted()))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	tr.ExpectContinueTimeout = time.Second
	if opts.Insecure && u.Scheme == "https" {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	ts, err := newTokenSource(opts.TokenFile)
	if err != nil {
		return nil, err
	}
	base := u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/")
	return &Store{
		base:   base,
		name:   base,
		client: &http.Client{Transport: store.WatchTransport(tr, opts.Stall())},
		token:  ts,
	}, nil
}

// String implements store.Store.
func (s *Store) String() string { return s.name }

// tokenSource gives the bearer token: CACHE_TOKEN, or the content of the
// file CACHE_TOKEN_FILE names, read again every tokenFileTTL.
type tokenSource struct {
	fixed string
	file  string

	mu   sync.Mutex
	tok  string
	read time.Time
}

func newTokenSource(file string) (*tokenSource, error) {
	if file == "" {
		file = os.Getenv(TokenFileEnv)
	}
	ts := &tokenSource{fixed: strings.TrimSpace(os.Getenv(TokenEnv)), file: file}
	if ts.fixed != "" && ts.file != "" {
		return nil, store.BadURL(fmt.Errorf("both %s and %s are set: set one", TokenEnv, TokenFileEnv))
	}
	if ts.file != "" {
		if _, err := ts.get(); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

func (ts *tokenSource) get() (string, error) {
	if ts.file == "" {
		return ts.fixed, nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != "" && time.Since(ts.read) < tokenFileTTL {
		return ts.tok, nil
	}
	data, err := os.ReadFile(ts.file)
	if err != nil {
		return "", fmt.Errorf("reading the token file (%s): %w", TokenFileEnv, err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("the token file %s (%s) is empty", ts.file, TokenFileEnv)
	}
	ts.tok, ts.read = tok, time.Now()
	return tok, nil
}

// do sends a request to path (with query q) and returns the answer when
// its status is one of ok; else an error that says what failed.
func (s *Store) do(ctx context.Context, method, path string, body io.Reader, size int64, hdr http.Header, ok ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	tok, err := s.token.get()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, s.netError(err, tok)
	}
	for _, c := range ok {
		if resp.StatusCode == c {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	return nil, s.statusError(resp, tok)
}

// netError is a failure to get an answer, one line, without the token.
func (s *Store) netError(err error, tok string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is in the store's name already
	}
	if ne, ok := storeerr.Unreachable(err); ok {
		return ne
	}
	return storeerr.New(storeerr.Scrub(err.Error(), tok), err)
}

// statusError reads an error answer: its code and message, and the
// sentinel the store contracts want (ErrNotFound, ErrInvalidKey,
// digest.ErrMismatch, ErrDamagedRef).
func (s *Store) statusError(resp *http.Response, tok string) error {
	var eb httpapi.ErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
		eb.Error.Message = storeerr.Cut(strings.TrimSpace(string(data)), 200)
		if h := resp.Header.Get(httpapi.HeaderError); h != "" { // a HEAD answer
			eb.Error.Code, _, _ = strings.Cut(h, ":")
			eb.Error.Message = storeerr.Cut(h, 1000)
		}
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if eb.Error.Message != "" {
		msg += ": " + eb.Error.Message
	}
	var cause []error
	switch {
	case resp.StatusCode == http.StatusNotFound:
		cause = append(cause, store.ErrNotFound)
	case eb.Error.Code == httpapi.CodeInvalidKey:
		cause = append(cause, store.ErrInvalidKey)
	case eb.Error.Code == httpapi.CodeMismatch:
		cause = append(cause, digest.ErrMismatch)
	case eb.Error.Code == httpapi.CodeDamagedRef:
		cause = append(cause, store.ErrDamagedRef)
	case resp.StatusCode == http.StatusUnauthorized && tok == "":
		msg += fmt.Sprintf(" (no token: set %s or %s)", TokenEnv, TokenFileEnv)
	case resp.StatusCode == http.StatusUnauthorized:
		msg += fmt.Sprintf(" (the server refused the token of %s)", s.tokenOrigin())
	case resp.StatusCode == http.StatusForbidden:
		msg += " (the token may not do this: see the server's tokens file)"
	case resp.StatusCode == http.StatusTooManyRequests:
		msg += " (the server is busy)"
	}
	return storeerr.New(storeerr.Scrub(msg, tok), append(cause, &StatusError{Code: resp.StatusCode, APICode: eb.Error.Code})...)
}

func (s *Store) tokenOrigin() string {
	if s.token.file != "" {
		return TokenFileEnv
	}
	return TokenEnv
}

// StatusError is the answer of a request that failed: its HTTP status and
// the API's error code (docs/HTTP.md). Find it with errors.As.
type StatusError struct {
	Code    int
	APICode string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d %s", e.Code, e.APICode) }

func blobPath(d digest.Digest) string { return httpapi.BlobsPath + d.Hex() }

func refPath(key string) string { return httpapi.RefsPath + url.PathEscape(key) }

// StatBlob implements store.Store.
func (s *Store) StatBlob(ctx context.Context, d digest.Digest) (store.BlobInfo, error) {
	resp, err := s.do(ctx, http.MethodHead, blobPath(d), nil, 0, nil, http.StatusOK)
	if err != nil {
		return store.BlobInfo{}, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return store.BlobInfo{}, fmt.Errorf("HTTP %d without a Content-Length", resp.StatusCode)
	}
	return store.BlobInfo{Size: resp.ContentLength, Modified: modified(resp.Header)}, nil
}

// modified is when the answer says the blob was written: the API's
// header (nanoseconds), else Last-Modified (seconds), else zero.
func modified(h http.Header) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, h.Get(httpapi.HeaderModified)); err == nil {
		return t
	}
	if t, err := http.ParseTime(h.Get("Last-Modified")); err == nil {
		return t
	}
	return time.Time{}
}

// GetBlob implements store.Store.
func (s *Store) GetBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	resp, err := s.do(ctx, http.MethodGet, blobPath(d), nil, 0, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// GetBlobRange implements store.BlobRanger.
func (s *Store) GetBlobRange(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	if off == 0 {
		return s.GetBlob(ctx, d)
	}
	hdr := http.Header{"Range": {"bytes=" + strconv.FormatInt(off, 10) + "-"}}
	resp, err := s.do(ctx, http.MethodGet, blobPath(d), nil, 0, hdr, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
		resp.Body.Close()
		return nil, fmt.Errorf("asked for byte %d on, the server answered %q", off, cr)
	}
	return resp.Body, nil
}

// PutBlob implements store.Store: the server hashes the bytes and keeps
// them only as blob d of size bytes. It asks "Expect: 100-continue", so
// that a blob the server holds already is not sent.
func (s *Store) PutBlob(ctx context.Context, d digest.Digest, size int64, r io.Reader) error {
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	if size > 0 {
		hdr.Set("Expect", "100-continue")
	}
	resp, err := s.do(ctx, http.MethodPut, blobPath(d), io.NopCloser(r), size, hdr, http.StatusCreated, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// MissingBlobs returns the digests of ds the server lacks, in one request
// per httpapi.MaxMissing digests.
func (s *Store) MissingBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	var missing []digest.Digest
	for len(ds) > 0 {
		n := min(len(ds), httpapi.MaxMissing)
		body, err := json.Marshal(httpapi.MissingRequest{Digests: ds[:n]})
		if err != nil {
			return nil, err
		}
		var out httpapi.MissingResponse
		if err := s.getJSON(ctx, http.MethodPost, httpapi.MissingPath, body, &out); err != nil {
			return nil, fmt.Errorf("asking which blobs are missing: %w", err)
		}
		missing = append(missing, out.Missing...)
		ds = ds[n:]
	}
	return missing, nil
}

// getJSON sends body (nil: none) and decodes a 200 answer's JSON into v.
func (s *Store) getJSON(ctx context.Context, method, path string, body []byte, v any) error {
	var rd io.Reader
	var hdr http.Header
	if body != nil {
		rd = bytes.NewReader(body)
		hdr = http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := s.do(ctx, method, path, rd, int64(len(body)), hdr, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRefSize+1))
	if err != nil {
		return err
	}
	if len(data) > maxRefSize {
		return fmt.Errorf("an answer over %d bytes", maxRefSize)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	return nil
}

// GetRef implements store.Store. The ref is validated as every store's
// is (store.DecodeRef): the server is as untrusted as a bucket.
func (s *Store) GetRef(ctx context.Context, key string) (*store.Ref, error) {
	resp, err := s.do(ctx, http.MethodGet, refPath(key), nil, 0, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRefSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading ref %q: %w", key, err)
	}
	return store.DecodeRef(key, data)
}

// PutRef implements store.Store. The server publishes it in the token's
// write scope, once it holds every blob it names.
func (s *Store) PutRef(ctx context.Context, ref *store.Ref) error {
	body, err := json.Marshal(ref)
	if err != nil {
		return err
	}
	hdr := http.Header{"Content-Type": {"application/json"}}
	resp, err := s.do(ctx, http.MethodPut, refPath(ref.Key), bytes.NewReader(body), int64(len(body)), hdr, http.StatusCreated, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// ListRefs implements store.Store.
func (s *Store) ListRefs(ctx context.Context, prefix string) ([]string, error) {
	infos, err := s.ListRefInfo(ctx, prefix)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Key
	}
	return keys, nil
}

// ListRefInfo implements store.RefLister: one request, whatever the
// number of keys.
func (s *Store) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	var out httpapi.RefList
	if err := s.getJSON(ctx, http.MethodGet, httpapi.RefListPath+"?prefix="+url.QueryEscape(prefix), nil, &out); err != nil {
		return nil, err
	}
	infos := make([]store.RefInfo, 0, len(out.Refs))
	for _, r := range out.Refs {
		if !strings.HasPrefix(r.Key, prefix) || store.ValidateKey(r.Key) != nil {
			return nil, fmt.Errorf("the server listed %q under prefix %q", storeerr.Cut(r.Key, 200), prefix)
		}
		infos = append(infos, store.RefInfo{Key: r.Key, Modified: r.Modified})
	}
	return infos, nil
}

// GHAToken exchanges the store's credentials (CACHE_TOKEN, the token
// file, or none) for a runtime token of the server's GitHub Actions cache
// (POST httpapi.GHATokenPath).
func (s *Store) GHAToken(ctx context.Context) (httpapi.GHAToken, error) {
	var out httpapi.GHAToken
	resp, err := s.do(ctx, http.MethodPost, httpapi.GHATokenPath, nil, 0, nil, http.StatusOK)
	if err != nil {
		return out, fmt.Errorf("%s: asking for a GitHub Actions cache token: %w", s, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(data, &out)
	}
	if err == nil && out.Token == "" {
		err = errors.New("no token in the answer")
	}
	if err != nil {
		return out, fmt.Errorf("%s: reading the GitHub Actions cache token: %w", s, err)
	}
	return out, nil
}
