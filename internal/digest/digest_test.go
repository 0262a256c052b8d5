package digest

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestParse(t *testing.T) {
	good := FromBytes([]byte("hello"))
	if _, err := Parse(string(good)); err != nil {
		t.Fatalf("Parse(%q): %v", good, err)
	}
	for _, bad := range []string{"", "sha256:", "md5:" + good.Hex(), "sha256:" + good.Hex()[:63], "sha256:" + good.Hex()[:63] + "G", "SHA256:" + good.Hex()} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = nil error, want one", bad)
		}
	}
	if got, want := good.String(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; got != want {
		t.Errorf("FromBytes(hello) = %s, want %s", got, want)
	}
}

func TestVerifier(t *testing.T) {
	data := []byte("some content to verify")
	d := FromBytes(data)
	for _, tc := range []struct {
		name    string
		data    []byte
		size    int64
		wantErr bool
	}{
		{"match", data, int64(len(data)), false},
		{"match without size", data, -1, false},
		{"corrupt", append([]byte("X"), data[1:]...), int64(len(data)), true},
		{"short", data[:5], int64(len(data)), true},
		{"long", append(append([]byte{}, data...), 'x'), int64(len(data)), true},
		{"size lies", data, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := io.Copy(io.Discard, NewVerifier(bytes.NewReader(tc.data), d, tc.size))
			if tc.wantErr != (err != nil) {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMismatch) {
				t.Fatalf("err = %v, want ErrMismatch", err)
			}
		})
	}
}
