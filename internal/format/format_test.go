package format

import (
	"errors"
	"strings"
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

func TestCheck(t *testing.T) {
	for v := MinVersion; v <= MaxVersion; v++ {
		if err := Check("index", v); err != nil {
			t.Errorf("version %d is in range: %v", v, err)
		}
	}
	for _, v := range []int{MinVersion - 1, MaxVersion + 1, 0, -1, 1 << 30} {
		err := Check(`ref "k"`, v)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("version %d: got %v, want ErrUnsupported", v, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), `ref "k" has format `) {
			t.Errorf("version %d: %q does not say what had it", v, err)
		}
	}
	if Version < MinVersion || Version > MaxVersion {
		t.Fatalf("this build writes %d, which it cannot read (%d to %d)", Version, MinVersion, MaxVersion)
	}
}

func TestPrefix(t *testing.T) {
	if got := Prefix(1); got != "v1/" {
		t.Errorf("Prefix(1) = %q, want v1/ (the layout of docs/FORMAT.md)", got)
	}
	if Prefix(2) == Prefix(1) {
		t.Error("two versions share a prefix")
	}
}

func TestDescriptorValidate(t *testing.T) {
	good := digest.FromBytes([]byte("x"))
	cases := []struct {
		d  Descriptor
		ok bool
	}{
		{Descriptor{Digest: good, Size: 1}, true},
		{Descriptor{Digest: good, Size: 0}, true},
		{Descriptor{Digest: good, Size: -1}, false},
		{Descriptor{Digest: "sha256:short", Size: 1}, false},
		{Descriptor{}, false},
	}
	for _, c := range cases {
		if err := c.d.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", c.d, err, c.ok)
		}
	}
}
