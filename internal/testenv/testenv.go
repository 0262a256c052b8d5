// Package testenv holds what tests share about their environment: whether
// a test that needs something missing (a server binary, Node.js) may skip.
package testenv

import (
	"os"
	"testing"
)

// DisallowSkipEnv, when set (`make test` sets it), turns SkipUnless's
// skips into failures, as CI=true does (.ci/run): in CI a missing server
// is a failure.
const DisallowSkipEnv = "CACHE_TEST_DISALLOW_SKIP"

// SkipUnless skips t with why, or fails it when DisallowSkipEnv is set or
// CI is true.
func SkipUnless(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(DisallowSkipEnv) != "" || os.Getenv("CI") == "true" {
		t.Fatalf("%s (and %s or CI=true is set, so this cannot be skipped)", why, DisallowSkipEnv)
	}
	t.Skip(why)
}
