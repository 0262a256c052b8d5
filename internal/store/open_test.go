package store

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestSplitKey(t *testing.T) {
	for _, tc := range []struct{ in, store, key string }{
		{"oci://registry.example:5000/team/cache:go-abc", "oci://registry.example:5000/team/cache", "go-abc"},
		{"oci://127.0.0.1:5000/cache:k1", "oci://127.0.0.1:5000/cache", "k1"},
		{"s3://bucket/prefix/go-abc?region=us-east-1&use_path_style=true", "s3://bucket/prefix?region=us-east-1&use_path_style=true", "go-abc"},
		{"s3://bucket/k", "s3://bucket", "k"},
		{"file:///var/cache/tekton/key1", "file:///var/cache/tekton", "key1"},
	} {
		s, k, err := SplitKey(tc.in)
		if err != nil || s != tc.store || k != tc.key {
			t.Errorf("SplitKey(%q) = %q, %q, %v; want %q, %q", tc.in, s, k, err, tc.store, tc.key)
		}
	}
	for _, bad := range []string{"", "oci://registry:5000/repo", "oci://repo", "oci://registry:5000/repo:", "s3://bucket/", "file:///key", "no-scheme/key"} {
		if _, _, err := SplitKey(bad); err == nil {
			t.Errorf("SplitKey(%q) succeeded, want an error", bad)
		}
	}
}

func TestRedact(t *testing.T) {
	got := Redact("s3://user:hunter2@bucket/p?region=x&sig=abcdef&AccountKey=zzz")
	for _, secret := range []string{"hunter2", "abcdef", "zzz"} {
		if strings.Contains(got, secret) {
			t.Errorf("Redact left %q in %q", secret, got)
		}
	}
	if !strings.Contains(got, "region=x") {
		t.Errorf("Redact removed a harmless param: %q", got)
	}
	// A query value that is a URL with a password (an S3 endpoint).
	got = Redact("s3://b/p?endpoint=http://u:pw-in-endpoint@127.0.0.1:9000&region=x&e2=http%3A%2F%2Fv%3Apw-escaped%40h")
	for _, secret := range []string{"pw-in-endpoint", "pw-escaped"} {
		if strings.Contains(got, secret) {
			t.Errorf("Redact left %q in %q", secret, got)
		}
	}
	if !strings.Contains(got, "endpoint=http://u@127.0.0.1:9000") || !strings.Contains(got, "region=x") {
		t.Errorf("Redact changed more than the endpoint's password: %q", got)
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"go-0123", "A_b.c-d", "_x", strings.Repeat("x", 128)} {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", ".x", "-x", "a/b", "a:b", strings.Repeat("x", 129)} {
		if err := ValidateKey(k); err == nil {
			t.Errorf("ValidateKey(%q) = nil, want an error", k)
		}
	}
}

// TestMapKey: the reference tool's object-store keys (cache-go:HASH) and
// branch prefixes (feature/x-) map to valid keys, character by character,
// so that a mapped prefix still prefixes the mapped key.
func TestMapKey(t *testing.T) {
	for in, want := range map[string]string{"cache-go:abc": "cache-go-abc", "feature/x-": "feature-x-", "go-abc": "go-abc", "pkg@1.2+b=": "pkg-1.2-b-"} {
		got, changed, err := MapKey(in)
		if err != nil || got != want || changed != (in != want) {
			t.Errorf("MapKey(%q) = %q, %v, %v; want %q", in, got, changed, err, want)
		}
	}
	k, _, _ := MapKey("main/cache-go:0123")
	p, _, _ := MapPrefix("main/cache-go:")
	if !strings.HasPrefix(k, p) {
		t.Errorf("mapped prefix %q does not prefix mapped key %q", p, k)
	}
	for _, bad := range []string{"", "a b", ".x", "-x", strings.Repeat("x", 129), "a*b"} {
		if _, _, err := MapKey(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("MapKey(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
}

// TestRedactKeepsTheURLAsWritten is review D9: logs showed
// endpoint=http%3A%2F%2F... and go-%7B%7Bhash%7D%7D.
func TestRedactKeepsTheURLAsWritten(t *testing.T) {
	in := "s3://b/p/go-{{hash}}?endpoint=http://127.0.0.1:9000&use_path_style=true&X-Amz-Signature=s3cr3t"
	want := "s3://b/p/go-{{hash}}?endpoint=http://127.0.0.1:9000&use_path_style=true&X-Amz-Signature=REDACTED"
	if got := Redact(in); got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}

func TestBadURLsAreMarked(t *testing.T) {
	var m Mux
	m.Register("file", func(context.Context, *url.URL, Options) (Store, error) { return nil, nil })
	for _, raw := range []string{"", "foo://x", "/mnt/cache", "s3://b\x7f"} {
		_, err := m.Open(context.Background(), raw, Options{})
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("Open(%q) = %v, want ErrBadURL", raw, err)
		}
	}
	_, err := ParseURL("/mnt/cache/go-{{hash}}")
	if err == nil || !strings.Contains(err.Error(), "file:///mnt/cache/go-{{hash}}") || strings.Contains(err.Error(), "oci:///") {
		t.Errorf("no-scheme error: %v", err)
	}
}
