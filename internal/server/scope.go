package server

import (
	"fmt"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// scopeSep separates a scope from a key in the backing store's keys. A
// scope never holds it (ValidateScope), so the first one ends the scope:
// (scope, key) -> scope + "." + key is one-to-one, and no key of one
// scope is a key of another, whatever either key holds.
const scopeSep = "."

// ScopedKey is the backing store's key of key in scope. It is refused
// with store.ErrInvalidKey when key is invalid, or too long to be one with
// the scope in front (store.ValidateKey allows 128 characters in all).
func ScopedKey(scope, key string) (string, error) {
	if err := store.ValidateKey(key); err != nil {
		return "", err
	}
	sk := scope + scopeSep + key
	if err := store.ValidateKey(sk); err != nil {
		return "", fmt.Errorf("%w %q: at most %d characters in scope %q", store.ErrInvalidKey, key, MaxKeyLen(scope), scope)
	}
	return sk, nil
}

// MaxKeyLen is the longest key scope can hold.
func MaxKeyLen(scope string) int { return 128 - len(scope) - len(scopeSep) }

// scopedPrefix is the backing store's prefix of the keys of scope that
// start with prefix.
func scopedPrefix(scope, prefix string) string { return scope + scopeSep + prefix }

// unscope returns the key of scope that sk, a backing key, is, if it is one.
func unscope(scope, sk string) (string, bool) {
	return strings.CutPrefix(sk, scope+scopeSep)
}
