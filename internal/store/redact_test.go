package store

import (
	"strings"
	"testing"
)

// TestRedactUsesTheScrubRules: every parameter of the two rule sets that
// storeerr.SecretParam replaced is redacted from a store URL, as Scrub
// removes it from a message (storeerr.TestScrub).
func TestRedactUsesTheScrubRules(t *testing.T) {
	for _, k := range []string{
		"key", "api_key", "secret", "token", "password", "credential",
		"sig", "signature", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "X-Goog-Signature", "X-Goog-Credential",
		"AccountKey", "SharedAccessSignature", "access_token", "refresh_token", "id_token", "client_secret", "assertion",
	} {
		in := "azblob://c/p?region=x&" + k + "=v4lue-s3cr3t&prefix=y"
		if got, want := Redact(in), "azblob://c/p?region=x&"+k+"=REDACTED&prefix=y"; got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Redact("s3://b/p?region=x&sv=2020&endpoint=http://127.0.0.1:9000"); strings.Contains(got, "REDACTED") {
		t.Errorf("Redact removed a harmless parameter: %q", got)
	}
}
