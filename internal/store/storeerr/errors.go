package storeerr

import "strings"

// Error is an error whose message was written for people, one line and
// free of secrets, while errors.Is and errors.As still reach its causes
// (the SDK's error, store.ErrNotFound, context.Canceled, a *NetError ...).
type Error struct {
	msg  string
	errs []error
}

// New returns an Error with message msg, made one line, that wraps errs.
func New(msg string, errs ...error) *Error {
	return &Error{msg: OneLine(msg), errs: errs}
}

// Error implements error.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the causes.
func (e *Error) Unwrap() []error { return e.errs }

// OneLine joins the lines of s with spaces and collapses runs of white
// space (SDKs like multi-line messages).
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Cut bounds s to n bytes, ending it with "..." when it was longer, and
// never splits a UTF-8 sequence.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 { // s[n] continues the sequence before it
		n--
	}
	return s[:n] + "..."
}
