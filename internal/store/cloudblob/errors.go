package cloudblob

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"

	"gocloud.dev/gcerrors"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Error is an error from a cloud bucket whose message is safe to show: one
// line, no secrets. errors.Is and errors.As still reach the SDK's error (and
// store.ErrNotFound for a missing object).
type Error struct {
	msg  string
	errs []error
}

// Error implements error.
func (e *Error) Error() string { return e.msg }

// Unwrap gives the SDK's error (and store.ErrNotFound when it applies).
func (e *Error) Unwrap() []error { return e.errs }

// NewError returns an Error with message msg (made one line) that wraps errs.
func NewError(msg string, errs ...error) *Error {
	return &Error{msg: OneLine(msg), errs: errs}
}

// Classifier turns a backend's native error into a one-line cause, such as
// "access denied (SignatureDoesNotMatch): check AWS credentials (...)", or
// returns ok == false to leave it to the generic mapping.
type Classifier func(err error) (cause string, ok bool)

// MapError is the one place where an SDK error becomes a store error. In
// order: an error already mapped is kept; a cancelled or expired context says
// so; an endpoint that cannot be reached says which and why; classify names
// backend causes; gcerrors.NotFound wraps store.ErrNotFound; anything else
// keeps the SDK's message, flattened to one line. Every message is passed
// through Scrub with secrets.
func MapError(err error, classify Classifier, secrets []string) error {
	if err == nil {
		return nil
	}
	var mapped *Error
	if errors.As(err, &mapped) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return NewError(context.Canceled.Error(), err)
	case errors.Is(err, context.DeadlineExceeded):
		return NewError("timed out: "+context.DeadlineExceeded.Error(), err)
	}
	var stalled *store.StallError
	if errors.As(err, &stalled) {
		return NewError(stalled.Error(), err)
	}
	if cause, ok := Unreachable(err); ok {
		return NewError(Scrub(cause, secrets...), err)
	}
	if classify != nil {
		if cause, ok := classify(err); ok {
			return NewError(Scrub(cause, secrets...), err)
		}
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &Error{msg: store.ErrNotFound.Error(), errs: []error{store.ErrNotFound, err}}
	}
	return NewError(Scrub(Message(err), secrets...), err)
}

// Message is err's text without gocloud's "blob (key ...) (code=...): "
// wrapper, which repeats the object name and says nothing to a user.
func Message(err error) string {
	msg := err.Error()
	if inner := errors.Unwrap(err); inner != nil && strings.HasPrefix(msg, "blob ") && strings.HasSuffix(msg, inner.Error()) {
		msg = inner.Error()
	}
	return msg
}

// Unreachable recognises an endpoint that cannot be reached (no listener,
// unknown host, timeout, refused TLS) and describes it as
// "cannot reach http://127.0.0.1:9000: connection refused".
func Unreachable(err error) (string, bool) {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		why := "no such host"
		if !dnsErr.IsNotFound {
			why = dnsErr.Err
		}
		return fmt.Sprintf("cannot reach %s: cannot resolve %q: %s", endpoint(err, dnsErr.Name), dnsErr.Name, why), true
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		return "", false
	}
	addr := ""
	if opErr.Addr != nil {
		addr = opErr.Addr.String()
	}
	var why string
	switch {
	case errors.Is(opErr, syscall.ECONNREFUSED):
		why = "connection refused"
	case errors.Is(opErr, syscall.EHOSTUNREACH), errors.Is(opErr, syscall.ENETUNREACH):
		why = "no route to host"
	case opErr.Timeout():
		why = "connection timed out"
	default:
		why = opErr.Err.Error()
		var se *os.SyscallError
		if errors.As(opErr.Err, &se) {
			why = se.Err.Error()
		}
	}
	return fmt.Sprintf("cannot reach %s: %s", endpoint(err, addr), why), true
}

// endpoint returns scheme://host of the request that failed, never its path
// or query (which may hold a SAS token), or fallback.
func endpoint(err error, fallback string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			return u.Scheme + "://" + u.Host
		}
	}
	if fallback == "" {
		return "the endpoint"
	}
	return fallback
}

// maxMessage bounds a message: SDK errors can carry a whole response body.
const maxMessage = 600

// OneLine joins the lines of s with spaces, collapses runs of white space,
// and cuts it to a readable length.
func OneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && s[cut]&0xc0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// secretParams matches key=value pairs whose value is a credential, in URLs,
// connection strings and SDK messages.
var secretParams = regexp.MustCompile(`(?i)\b(sig|signature|x-amz-signature|x-amz-security-token|x-amz-credential|x-goog-signature|x-goog-credential|accountkey|sharedaccesssignature|access_token|refresh_token|id_token|client_secret|password|assertion)=([^&;\s"',]+)`)

// bearer matches an Authorization header's token.
var bearer = regexp.MustCompile(`(?i)\b(bearer|sharedkey|sharedkeylite)\s+[A-Za-z0-9._~+/=:-]+`)

// Scrub removes secrets from msg: every non-trivial string in secrets (raw
// and URL-encoded), the values of credential parameters (sig=, AccountKey=,
// X-Amz-Signature=, ...) and Authorization tokens.
func Scrub(msg string, secrets ...string) string {
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		msg = strings.ReplaceAll(msg, s, "REDACTED")
		if e := url.QueryEscape(s); e != s {
			msg = strings.ReplaceAll(msg, e, "REDACTED")
		}
	}
	msg = secretParams.ReplaceAllString(msg, "$1=REDACTED")
	return bearer.ReplaceAllString(msg, "$1 REDACTED")
}

// EnvSecrets returns the values of the environment variables names that are
// set, for Scrub, plus the credential fields of any that are connection
// strings (AccountKey=...;SharedAccessSignature=...).
func EnvSecrets(names ...string) []string {
	var out []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			continue
		}
		out = append(out, v)
		for part := range strings.SplitSeq(v, ";") {
			k, val, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "accountkey", "sharedaccesssignature":
				out = append(out, val)
			}
		}
		if q, err := url.ParseQuery(strings.TrimPrefix(v, "?")); err == nil && q.Get("sig") != "" {
			out = append(out, q.Get("sig"))
		}
	}
	return out
}
