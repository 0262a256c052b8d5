package store

import (
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
	for _, bad := range []string{"", "oci://registry:5000/repo", "oci://repo", "s3://bucket/", "file:///key", "no-scheme/key"} {
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
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"go-0123", "A_b.c-d", "_x"} {
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
