package cloudblob

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"gocloud.dev/gcerrors"

	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// maxMessage bounds a message: SDK errors can carry a whole response body.
const maxMessage = 600

// NewError returns an error with message msg, made one line and cut to a
// readable length, that wraps errs: errors.Is and errors.As still reach the
// SDK's error (and store.ErrNotFound for a missing object).
func NewError(msg string, errs ...error) error {
	return storeerr.New(storeerr.Cut(storeerr.OneLine(msg), maxMessage), errs...)
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
	var mapped *storeerr.Error
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
	if ne, ok := storeerr.Unreachable(err); ok {
		return NewError(storeerr.Scrub(ne.Error(), secrets...), ne, err)
	}
	if classify != nil {
		if cause, ok := classify(err); ok {
			return NewError(storeerr.Scrub(cause, secrets...), err)
		}
	}
	if gcerrors.Code(err) == gcerrors.NotFound {
		return NewError(store.ErrNotFound.Error(), store.ErrNotFound, err)
	}
	return NewError(storeerr.Scrub(Message(err), secrets...), err)
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

// EnvSecrets returns the credentials in the environment variables names
// that are set, for Scrub: each value, plus the secret fields of any that is
// a connection string (AccountKey=...;SharedAccessSignature=...) or a SAS
// query (sv=...&sig=...).
func EnvSecrets(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, storeerr.SecretValues(os.Getenv(n))...)
	}
	return out
}

// OpenError is the error of gocloud's bucket opener, for the store called
// name, without gocloud's "open bucket URL: " prefix and with secrets
// scrubbed.
func OpenError(name string, err error, secrets []string) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "open bucket "); ok {
		if _, after, found := strings.Cut(rest, ": "); found {
			msg = after
		}
	}
	return fmt.Errorf("%s: opening: %w", name, NewError(storeerr.Scrub(msg, secrets...), err))
}
