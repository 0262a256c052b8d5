// Package digest names content by its sha256, in the "sha256:<hex>" form
// that OCI registries and the entry format share.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// Algorithm is the only digest algorithm of format v1.
const Algorithm = "sha256"

// Digest is "sha256:" followed by 64 lowercase hex characters.
// The zero value is the empty digest, which is never valid.
type Digest string

// ErrMismatch is wrapped by the errors of a Verifier whose bytes do not
// match the digest it was given.
var ErrMismatch = errors.New("digest mismatch")

// Parse checks that s is a well-formed sha256 digest.
func Parse(s string) (Digest, error) {
	hexPart, ok := strings.CutPrefix(s, Algorithm+":")
	if !ok {
		return "", fmt.Errorf("parsing digest %q: want the %s: prefix", s, Algorithm)
	}
	if len(hexPart) != 64 {
		return "", fmt.Errorf("parsing digest %q: want 64 hex characters, got %d", s, len(hexPart))
	}
	if i := badHex(hexPart); i >= 0 {
		return "", fmt.Errorf("parsing digest %q: %q is not lowercase hex", s, hexPart[i])
	}
	return Digest(s), nil
}

// ValidHex reports whether h is the hex part of a digest: 64 lowercase hex
// characters (what an index holds of a file's digest), without building
// the digest.
func ValidHex(h string) bool { return len(h) == 64 && badHex(h) < 0 }

// badHex returns the position of the first byte of h that is not
// lowercase hex, or -1.
func badHex(h string) int {
	for i := 0; i < len(h); i++ {
		if !isHex[h[i]] {
			return i
		}
	}
	return -1
}

// isHex says which bytes are lowercase hex digits.
var isHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// FromBytes returns the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return FromSum(sum[:])
}

// FromSum builds a digest from a raw sha256 sum.
func FromSum(sum []byte) Digest {
	return Digest(Algorithm + ":" + hex.EncodeToString(sum))
}

// Hex returns the hex part of d.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), Algorithm+":") }

// String implements fmt.Stringer.
func (d Digest) String() string { return string(d) }

// Short returns the first 12 hex characters, for logs.
func (d Digest) Short() string {
	h := d.Hex()
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Validate reports whether d is well formed.
func (d Digest) Validate() error {
	_, err := Parse(string(d))
	return err
}

// Digester hashes what is written to it.
type Digester struct {
	h hash.Hash
	n int64
}

// NewDigester returns an empty Digester.
func NewDigester() *Digester { return &Digester{h: sha256.New()} }

// Write implements io.Writer.
func (d *Digester) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

// Digest returns the digest of everything written so far.
func (d *Digester) Digest() Digest { return FromSum(d.h.Sum(nil)) }

// Size returns the number of bytes written so far.
func (d *Digester) Size() int64 { return d.n }

// Reset empties the Digester for reuse.
func (d *Digester) Reset() { d.h.Reset(); d.n = 0 }

// Verifier wraps a reader and, at EOF, fails with ErrMismatch when the bytes
// read do not have the expected digest or size (size < 0 skips the size check).
// A reader that ends early or late is never reported as io.EOF.
type Verifier struct {
	r    io.Reader
	want Digest
	size int64
	d    *Digester
}

// NewVerifier returns a Verifier of r against want and size.
func NewVerifier(r io.Reader, want Digest, size int64) *Verifier {
	return &Verifier{r: r, want: want, size: size, d: NewDigester()}
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.d.Write(p[:n]) //nolint:errcheck // hashing never fails
	if v.size >= 0 && v.d.Size() > v.size {
		return n, fmt.Errorf("%w: %s: more than the %d bytes expected", ErrMismatch, v.want.Short(), v.size)
	}
	if err == io.EOF {
		if v.size >= 0 && v.d.Size() != v.size {
			return n, fmt.Errorf("%w: %s: got %d bytes, want %d", ErrMismatch, v.want.Short(), v.d.Size(), v.size)
		}
		if got := v.d.Digest(); got != v.want {
			return n, fmt.Errorf("%w: got %s, want %s", ErrMismatch, got.Short(), v.want.Short())
		}
	}
	return n, err
}
