// Package testenv holds what tests share about their environment: whether
// a test that needs something missing (a server binary, Node.js) may skip.
package testenv

import (
	"os"
	"testing"
)

// DisallowSkipEnv, when set (CI sets it), turns SkipUnless's skips into
// failures: in CI a missing server is a failure.
const DisallowSkipEnv = "CACHE_TEST_DISALLOW_SKIP"

// SkipUnless skips t with why, or fails it when DisallowSkipEnv is set.
func SkipUnless(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(DisallowSkipEnv) != "" {
		t.Fatalf("%s (and %s is set, so this cannot be skipped)", why, DisallowSkipEnv)
	}
	t.Skip(why)
}
