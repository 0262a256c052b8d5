package storeerr_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

// secretNames are the parameters of both rule sets that came before
// SecretParam: store.isSecretParam's words (key, secret, token, sig,
// password, credential) and cloudblob.secretParams's names.
var secretNames = []string{
	// isSecretParam
	"key", "api_key", "secret", "token", "sig", "password", "credential", "KEY", "Client-Secret",
	// secretParams
	"sig", "signature", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "X-Goog-Signature",
	"X-Goog-Credential", "AccountKey", "SharedAccessSignature", "access_token", "refresh_token", "id_token",
	"client_secret", "password", "assertion",
}

func TestSecretParam(t *testing.T) {
	for _, k := range secretNames {
		if !storeerr.SecretParam(k) {
			t.Errorf("SecretParam(%q) = false", k)
		}
	}
	for _, k := range []string{"region", "endpoint", "use_path_style", "sv", "se", "sp", "AccountName", "BlobEndpoint", "prefix", "code", ""} {
		if storeerr.SecretParam(k) {
			t.Errorf("SecretParam(%q) = true", k)
		}
	}
}

func TestScrub(t *testing.T) {
	const v = "s3cr3tV4lue"
	// Every secret parameter, in a URL, a query string, a connection
	// string and a message.
	for _, k := range secretNames {
		for _, in := range []string{
			"https://h.example/c/b?sv=2020&" + k + "=" + v + "&se=1",
			k + "=" + v,
			"DefaultEndpointsProtocol=http;AccountName=a;" + k + "=" + v + ";BlobEndpoint=http://h",
			`GET "https://h/o?` + k + "=" + v + `": 403 Forbidden`,
			"invalid request (" + k + "=" + v + ", expired)",
			"refusing '" + k + "=" + v + "'",
		} {
			out := storeerr.Scrub(in)
			if strings.Contains(out, v) {
				t.Errorf("Scrub(%q) = %q: still has the secret", in, out)
			}
			if !strings.Contains(out, k+"=REDACTED") {
				t.Errorf("Scrub(%q) = %q: no %s=REDACTED", in, out, k)
			}
		}
	}
	for _, tc := range []struct{ in, want string }{
		// What is not a secret stays as it was.
		{"GET https://h/c/b?sv=2020&se=1&sp=r: 404", "GET https://h/c/b?sv=2020&se=1&sp=r: 404"},
		{"blob (key \"cas/ab\") (code=NotFound): gone", "blob (key \"cas/ab\") (code=NotFound): gone"},
		{"cannot reach http://127.0.0.1:9000: connection refused", "cannot reach http://127.0.0.1:9000: connection refused"},
		{"endpoint=http://127.0.0.1:9000&region=x", "endpoint=http://127.0.0.1:9000&region=x"},
		// Values with '=' and escapes are removed whole.
		{"AccountName=a;AccountKey=Zm9vYmFy==;BlobEndpoint=http://h", "AccountName=a;AccountKey=REDACTED;BlobEndpoint=http://h"},
		{"GET https://h/c/b?sv=2020&sig=Zm9v%2Bbar&se=1", "GET https://h/c/b?sv=2020&sig=REDACTED&se=1"},
		{"X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/2026", "X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"},
		// A URL's password; the user stays.
		{`Get "http://ciuser:pw0rd@127.0.0.1:5000/v2/": EOF`, `Get "http://ciuser@127.0.0.1:5000/v2/": EOF`},
		{"s3://user:hunter2@bucket/p?region=x", "s3://user@bucket/p?region=x"},
		{"http://127.0.0.1:9000/a@b", "http://127.0.0.1:9000/a@b"},
		// Authorization tokens.
		{"Authorization: Bearer ya29.abc-def", "Authorization: Bearer REDACTED"},
		{"Authorization: SharedKey devstoreaccount1:c2lnbmF0dXJl", "Authorization: SharedKey REDACTED"},
		{"authorization: SharedKeyLite acct:c2ln", "authorization: SharedKeyLite REDACTED"},
		{"Authorization: Basic Y2l1c2VyOnB3", "Authorization: Basic REDACTED"},
		{"basic auth failed", "basic auth failed"},
	} {
		if got := storeerr.Scrub(tc.in); got != tc.want {
			t.Errorf("Scrub(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestScrubKnownSecrets(t *testing.T) {
	const s = "a+secret/value="
	in := "raw " + s + " escaped " + url.QueryEscape(s) + " short abc"
	if got, want := storeerr.Scrub(in, s, "abc", ""), "raw REDACTED escaped REDACTED short abc"; got != want {
		t.Errorf("Scrub = %q, want %q (secrets under 4 bytes are left)", got, want)
	}
}

// TestScrubOfAURL: a store URL comes out of Scrub as store.Redact
// writes it (TestRedact in package store checks Redact itself).
func TestScrubOfAURL(t *testing.T) {
	in := "s3://user:hunter2@bucket/p?region=x&sig=abcdef&AccountKey=zzz"
	if got, want := storeerr.Scrub(in), "s3://user@bucket/p?region=x&sig=REDACTED&AccountKey=REDACTED"; got != want {
		t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
	}
}

func TestSecretValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"plainSecret", []string{"plainSecret"}},
		{"AccountName=a;AccountKey=k3yk3y==;", []string{"AccountName=a;AccountKey=k3yk3y==;", "k3yk3y=="}},
		{"BlobEndpoint=http://h;SharedAccessSignature=sv=1&sig=x", []string{"BlobEndpoint=http://h;SharedAccessSignature=sv=1&sig=x", "sv=1&sig=x"}},
		{"?sv=2020&sig=Zm9v%2B&se=1", []string{"?sv=2020&sig=Zm9v%2B&se=1", "Zm9v+"}},
		{"sv=2020&X-Amz-Signature=ab&sp=r", []string{"sv=2020&X-Amz-Signature=ab&sp=r", "ab"}},
	} {
		if got := storeerr.SecretValues(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SecretValues(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
