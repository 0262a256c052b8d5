package storeerr_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store/storeerr"
)

func TestOneLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"one line", "one line"},
		{"first\nsecond", "first second"},
		{"operation error S3: GetObject,\n\thttps response error StatusCode: 403,\r\n  RequestID: x", "operation error S3: GetObject, https response error StatusCode: 403, RequestID: x"},
		{"  padded  \n\n", "padded"},
		{"tabs\tand\vvertical\ftabs", "tabs and vertical tabs"},
		{"é\nü", "é ü"},
	} {
		if got := storeerr.OneLine(tc.in); got != tc.want {
			t.Errorf("OneLine(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven char", 10, "eleven cha..."},
		{"ééé", 3, "é..."}, // byte 3 is inside the second é
		{"ééé", 4, "éé..."},
		{"abc", 0, "..."},
	} {
		if got := storeerr.Cut(tc.in, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	long := storeerr.Cut(strings.Repeat("é", 1000), 600)
	if len(long) > 603 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "éé") || strings.ContainsRune(long, '\uFFFD') {
		t.Fatalf("Cut of a long message: %d bytes, %q...", len(long), long[:10])
	}
}

func TestErrorWrapsEveryCause(t *testing.T) {
	sentinel := errors.New("sentinel")
	sdk := &sdkError{code: 403}
	err := fmt.Errorf("store: op: %w", storeerr.New("access\n  denied", sentinel, fmt.Errorf("sdk: %w", sdk), context.Canceled))
	if got := err.Error(); got != "store: op: access denied" {
		t.Errorf("message = %q", got)
	}
	if !errors.Is(err, sentinel) || !errors.Is(err, context.Canceled) {
		t.Error("errors.Is does not see through Error")
	}
	var se *sdkError
	if !errors.As(err, &se) || se.code != 403 {
		t.Error("errors.As does not see through Error")
	}
	var e *storeerr.Error
	if !errors.As(err, &e) || len(e.Unwrap()) != 3 {
		t.Error("errors.As does not find the Error")
	}
}

type sdkError struct{ code int }

func (e *sdkError) Error() string { return fmt.Sprintf("HTTP %d", e.code) }
