package oci

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// ErrForeignEntry is wrapped by the error of GetRef when the tag holds
// something that is not a tekton-cache entry, such as the single gzip tar
// layer image that openshift-pipelines/tekton-caches pushes. Such an error
// wraps store.ErrNotFound as well.
var ErrForeignEntry = store.ErrForeign

// fail turns err, returned by go-containerregistry while doing op, into a
// one-line error that names the store, op and the cause, while errors.Is
// and errors.As still see the causes (store.ErrNotFound, the
// go-containerregistry *transport.Error, context.Canceled, a
// *storeerr.NetError ...).
func (s *Store) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var oe *storeerr.Error
	if errors.As(err, &oe) {
		return err // already ours
	}
	cause, extra := s.cause(err)
	return storeerr.New(fmt.Sprintf("%s: %s: %s", s, op, cause), append(extra, err)...)
}

// cause describes err in one short line and returns the sentinels it means.
func (s *Store) cause(err error) (string, []error) {
	if errors.Is(err, context.Canceled) {
		return "cancelled", nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out", nil
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return s.registryCause(te)
	}
	host := s.repo.RegistryStr()
	if ne, ok := storeerr.Unreachable(err); ok {
		why := storeerr.OneLine(ne.Reason)
		if ne.Refused {
			why += " (is it running, and are the host and port right?)"
		}
		return fmt.Sprintf("cannot reach the registry at %s: %s", host, why), []error{ne}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return fmt.Sprintf("TLS certificate of %s not trusted (%s): add its CA to the system, or use --insecure", host, storeerr.OneLine(lastPart(certErr.Err.Error()))), nil
	}
	msg := err.Error()
	if strings.Contains(msg, "server gave HTTP response to HTTPS client") {
		return fmt.Sprintf("%s speaks plain HTTP, not HTTPS: use --insecure", host), nil
	}
	return storeerr.OneLine(msg), nil
}

// registryCause describes an error response of the registry.
func (s *Store) registryCause(te *transport.Error) (string, []error) {
	host := s.repo.RegistryStr()
	has := func(codes ...transport.ErrorCode) bool {
		for _, d := range te.Errors {
			for _, c := range codes {
				if d.Code == c {
					return true
				}
			}
		}
		return false
	}
	switch {
	case has(transport.NameUnknownErrorCode):
		return "repository not found", []error{store.ErrNotFound}
	case has(transport.BlobUnknownErrorCode, transport.ManifestUnknownErrorCode) || te.StatusCode == http.StatusNotFound:
		return "not found", []error{store.ErrNotFound}
	case has(transport.UnauthorizedErrorCode) || te.StatusCode == http.StatusUnauthorized:
		return fmt.Sprintf("unauthorized: check the credentials for %s (%s)", host, s.creds), nil
	case has(transport.DeniedErrorCode) || te.StatusCode == http.StatusForbidden:
		return fmt.Sprintf("denied: the credentials for %s (%s) do not allow this on %s", host, s.creds, s.repo.RepositoryStr()), nil
	case has(transport.ManifestBlobUnknownErrorCode):
		return "the registry lacks a blob the entry names: put the blobs before the ref", nil
	case has(transport.ManifestInvalidErrorCode, transport.UnsupportedErrorCode) && te.Request != nil && te.Request.Method == http.MethodPut:
		return fmt.Sprintf("the registry refused the entry's manifest (%s): it may not accept OCI artifacts of type %s with config type %s; see docs/OCI.md", storeerr.Cut(storeerr.OneLine(diagnostics(te)), 200), format.ArtifactType, format.IndexMediaType), nil
	case has(transport.DigestInvalidErrorCode):
		return "the registry rejected the bytes: they do not match the digest", nil
	case te.StatusCode == http.StatusTooManyRequests || has(transport.TooManyRequestsErrorCode):
		return "rate limited by the registry (429 Too Many Requests): try again later", nil
	}
	return "registry answered " + storeerr.Cut(storeerr.OneLine(diagnostics(te)), 300), nil
}

// diagnostics lists the error codes and messages of a registry answer, or
// its HTTP status when it has none.
func diagnostics(te *transport.Error) string {
	var parts []string
	for _, d := range te.Errors {
		p := string(d.Code)
		if d.Message != "" {
			p += ": " + d.Message
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("HTTP %d %s", te.StatusCode, http.StatusText(te.StatusCode))
	}
	return strings.Join(parts, "; ")
}

// lastPart returns what follows the last ": " of a chain of wrapped messages.
func lastPart(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		return s[i+2:]
	}
	return s
}
