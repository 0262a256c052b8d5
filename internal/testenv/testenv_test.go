package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipUnless runs itself in a child process, with and without
// DisallowSkipEnv and CI=true, and checks that a missing thing skips, or
// fails in CI.
func TestSkipUnless(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		SkipUnless(t, true, "never shown")
		SkipUnless(t, false, "the thing is missing")
		return
	}
	for _, tc := range []struct {
		disallow, ci string
		wantErr      bool
		want         string
	}{
		{"", "", false, "--- SKIP"},
		{"1", "", true, "--- FAIL"},
		{"", "true", true, "--- FAIL"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSkipUnless$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", DisallowSkipEnv+"="+tc.disallow, "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != tc.wantErr || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "the thing is missing") {
			t.Errorf("%s=%q CI=%q: err %v, output:\n%s", DisallowSkipEnv, tc.disallow, tc.ci, err, out)
		}
	}
}
