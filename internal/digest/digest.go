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

// Sum is a sha256 sum held as its 32 bytes: the content digest of an
// index entry, which costs 32 bytes in the entry instead of a 64-character
// hex string and its header (48 bytes an entry less, 29 MB at 600,000
// entries). Its text (JSON) form is the 64 lowercase hex characters of
// Hex. The zero Sum is "no digest": a sum of 32 zero bytes is refused as
// text, so a zero Sum is never a file's.
type Sum [32]byte

// SumOf returns the sum that h holds (h must be a sha256).
func SumOf(h hash.Hash) (s Sum) {
	h.Sum(s[:0])
	return s
}

// SumBytes returns the sum of b.
func SumBytes(b []byte) Sum { return sha256.Sum256(b) }

// ParseSum parses 64 lowercase hex characters, refusing the sum of zeros.
func ParseSum(h string) (Sum, error) {
	var s Sum
	err := s.UnmarshalText([]byte(h))
	return s, err
}

// IsZero reports whether s is no digest (what omitzero omits).
func (s Sum) IsZero() bool { return s == Sum{} }

// Hex returns the 64 lowercase hex characters of s ("" for the zero Sum).
func (s Sum) Hex() string {
	if s.IsZero() {
		return ""
	}
	return hex.EncodeToString(s[:])
}

// String implements fmt.Stringer: Hex.
func (s Sum) String() string { return s.Hex() }

// Digest returns s as "sha256:<hex>" ("" for the zero Sum).
func (s Sum) Digest() Digest {
	if s.IsZero() {
		return ""
	}
	return FromSum(s[:])
}

// Short returns the first 12 hex characters, for logs.
func (s Sum) Short() string { return hex.EncodeToString(s[:6]) }

// MarshalText gives Hex, for JSON.
func (s Sum) MarshalText() ([]byte, error) {
	out := make([]byte, 64)
	hex.Encode(out, s[:])
	return out, nil
}

// UnmarshalText takes 64 lowercase hex characters that are not all zeros.
func (s *Sum) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("a sha256 digest is 64 hex characters, not %d", len(b))
	}
	for i, c := range b {
		if !isHex[c] {
			return fmt.Errorf("a sha256 digest is lowercase hex: %q at %d is not", c, i)
		}
	}
	var t Sum
	hex.Decode(t[:], b) // checked above: cannot fail
	if t.IsZero() {
		return errors.New("a sha256 digest of zeros is no file's digest")
	}
	*s = t
	return nil
}
