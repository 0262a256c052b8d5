package cli

import (
	"reflect"
	"testing"
)

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{
		"a,b":                      {"a", "b"},
		"**/go.sum, **/{a,b}.lock": {"**/go.sum", "**/{a,b}.lock"},
		"one\ntwo, with comma\n":   {"one", "two, with comma"},
		" , ,":                     nil,
		"{a,{b,c}},d":              {"{a,{b,c}}", "d"},
	} {
		if got := splitList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestURIHasKey(t *testing.T) {
	for _, tc := range []struct {
		uri     string
		haveKey bool
		want    bool
	}{
		{"oci://r/repo:{{hash}}", false, true},
		{"oci://r/repo:{{hash}}", true, true},
		{"oci://r:5000/repo", true, false},
		{"oci://r:5000/repo:tag", true, true},
		{"s3://b/prefix", true, false},
		{"s3://b/prefix/{{hash}}", true, true},
		{"file:///dir/key", false, true},
	} {
		if got := uriHasKey(tc.uri, tc.haveKey); got != tc.want {
			t.Errorf("uriHasKey(%q, %v) = %v, want %v", tc.uri, tc.haveKey, got, tc.want)
		}
	}
}
