// Package storeerr is the one place where store errors are presented:
//
//   - OneLine and Cut put a message on one readable line;
//   - Scrub removes secrets from a message, with the one rule set
//     (SecretParam) that store.Redact applies to URLs as well;
//   - Error is a one-line message that still wraps its causes, so that
//     errors.Is and errors.As see through it;
//   - Unreachable classifies an endpoint that cannot be reached as a typed
//     *NetError (Refused, DNS, Timeout), which retry policies test with
//     errors.As rather than by reading a message.
//
// It imports the standard library only, so every layer may use it.
package storeerr
