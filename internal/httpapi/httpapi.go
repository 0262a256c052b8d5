// Package httpapi is the wire of the native HTTP store API (docs/HTTP.md),
// shared by its server (internal/server) and its client
// (internal/store/httpstore): paths, headers, error codes and the JSON
// bodies. It is a leaf beside the store interface, so that the client,
// which the step image carries, never depends on the server.
package httpapi

import (
	"time"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// Paths, relative to the server's base URL.
const (
	// BlobsPath + hex names a blob: HEAD, GET (Range), PUT.
	BlobsPath = "/v1/blobs/sha256/"
	// MissingPath answers which blobs of a MissingRequest the store lacks.
	MissingPath = "/v1/blobs:missing"
	// RefsPath + key names a ref: GET, PUT.
	RefsPath = "/v1/refs/"
	// RefListPath?prefix=P lists the keys under P (a RefList).
	RefListPath = "/v1/refs"
	// HealthPath answers 200 when the server runs.
	HealthPath = "/healthz"
)

// Headers.
const (
	// HeaderModified is when a blob was written (RFC 3339, nanoseconds),
	// finer than Last-Modified's seconds; absent when the store cannot tell.
	HeaderModified = "X-Cache-Modified"
	// HeaderScope is the scope a ref was read from.
	HeaderScope = "X-Cache-Scope"
	// HeaderError repeats an error answer's code and message ("code:
	// message"), for HEAD answers, which have no body.
	HeaderError = "X-Cache-Error"
)

// MaxMissing bounds the digests of one MissingRequest.
const MaxMissing = 10_000

// Error codes, in ErrorBody.Error.Code; the status says the same in HTTP's
// words.
const (
	CodeNotFound        = "not_found"         // 404
	CodeInvalid         = "invalid"           // 400: a malformed request
	CodeInvalidKey      = "invalid_key"       // 400
	CodeMismatch        = "digest_mismatch"   // 400: the bytes are not the blob the URL names
	CodeLengthRequired  = "length_required"   // 411
	CodeTooLarge        = "too_large"         // 413
	CodeRangeInvalid    = "range_invalid"     // 416
	CodeMissingBlob     = "missing_blob"      // 424: a ref names a blob the store lacks
	CodeTooManyRequests = "too_many_requests" // 429 with Retry-After: over a limit of the server's
	CodeDamagedRef      = "damaged_ref"       // 409: the stored ref cannot be read as an entry
	CodeUnauthenticated = "unauthenticated"   // 401
	CodeForbidden       = "forbidden"         // 403
	CodeUnsupported     = "unsupported"       // 501
	CodeStore           = "store_error"       // 502: the backing store failed
	CodeUnavailable     = "unavailable"       // 503: the server could not check the token (the Kubernetes API did not answer); try again
)

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is what went wrong: a code of the list above and a one-line
// message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// MissingRequest is the body of a POST to MissingPath.
type MissingRequest struct {
	Digests []digest.Digest `json:"digests"`
}

// MissingResponse is its answer: the digests of the request the store
// lacks, in the request's order.
type MissingResponse struct {
	Missing []digest.Digest `json:"missing"`
}

// RefList is the answer of a GET of RefListPath.
type RefList struct {
	Refs []RefListItem `json:"refs"`
}

// RefListItem is one key of a RefList: the scope a read of it would find
// it in (the first of the caller's read scopes that has it), and when the
// store wrote that ref (absent when the store cannot tell).
type RefListItem struct {
	Key      string    `json:"key"`
	Scope    string    `json:"scope"`
	Modified time.Time `json:"modified,omitzero"`
}

// GHATokenPath exchanges the caller's credentials (a static token, a
// ServiceAccount token, or none where anonymous access is allowed) for a
// runtime token of the GitHub Actions cache front end: POST, answered
// with a GHAToken.
const GHATokenPath = "/v1/gha/token"

// GHAToken is the answer of a POST to GHATokenPath: an HS256 JWT whose
// "ac" claim holds the caller's scopes, and when it expires.
type GHAToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}
