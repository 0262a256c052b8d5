package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Principal is who makes a request, and what it may do: write refs into
// one scope (none: read only) and read refs from an ordered list of scopes,
// the first that has a key winning.
type Principal struct {
	// Name names the principal in logs (never a token).
	Name string
	// Write is the scope its ref writes go to; empty: it may not write.
	Write string
	// Read are the scopes its ref reads search, in order; empty: it may
	// not read.
	Read []string
}

func (p *Principal) canRead() bool  { return p != nil && len(p.Read) > 0 }
func (p *Principal) canWrite() bool { return p != nil && p.Write != "" }

// ErrUnauthenticated is wrapped by an Authenticator's error for
// credentials it refuses (an unknown, expired or malformed token).
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrForbidden is wrapped by an Authenticator's error for valid
// credentials of someone who may do nothing here (a ServiceAccount the
// tokens file does not name): 403.
var ErrForbidden = errors.New("forbidden")

// ErrUnavailable is wrapped by an Authenticator's error when it could not
// check the credentials (the Kubernetes API did not answer): 503, which
// clients try again.
var ErrUnavailable = errors.New("authentication unavailable")

// Authenticator tells who made a request from its credentials. A request
// with no credentials gives (nil, nil): the server then treats it as
// anonymous. Credentials it refuses give an error wrapping
// ErrUnauthenticated (or ErrForbidden, or ErrUnavailable when it could not
// tell), whose message never holds them. The static tokens
// file is one (Tokens); a Kubernetes TokenReview is another (TokenReview).
type Authenticator interface {
	Authenticate(r *http.Request) (*Principal, error)
}

// scopePattern is the grammar of a scope: it has no '.', which separates a
// scope from a key in the backing store (ScopedKey), and is short, so
// that keys keep most of their 128 characters.
var scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,23}$`)

// ValidateScope checks a scope name: 1 to 24 lowercase letters, digits and
// '-', starting with a letter or digit.
func ValidateScope(s string) error {
	if !scopePattern.MatchString(s) {
		return fmt.Errorf("invalid scope %q: use 1-24 lowercase letters, digits or '-', starting with a letter or digit", s)
	}
	return nil
}

// BearerToken returns the token of r's "Authorization: Bearer" header, and
// whether r has an Authorization header at all.
func BearerToken(r *http.Request) (token string, has bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// credential is r's bearer token: ("", nil) without an Authorization
// header, an error for one that is not "Bearer TOKEN".
func credential(r *http.Request) (string, error) {
	tok, has := BearerToken(r)
	if has && tok == "" {
		return "", fmt.Errorf("%w: the Authorization header is not \"Bearer TOKEN\"", ErrUnauthenticated)
	}
	return tok, nil
}

// Tokens is an Authenticator over static bearer tokens, each known only by
// its sha256 (a tokens file, see LoadTokens). The file's serviceAccounts
// say what Kubernetes ServiceAccounts may do (ServiceAccounts), for
// TokenReview.
type Tokens struct {
	entries []tokenEntry
	sas     ServiceAccounts
}

type tokenEntry struct {
	sum [sha256.Size]byte
	p   Principal
}

// tokensFile is the tokens file: YAML or JSON (docs/HTTP.md).
type tokensFile struct {
	Tokens []struct {
		Name   string   `yaml:"name"`
		SHA256 string   `yaml:"sha256"`
		Write  string   `yaml:"write"`
		Read   []string `yaml:"read"`
	} `yaml:"tokens"`
	ServiceAccounts []struct {
		Name  string   `yaml:"name"`
		Write string   `yaml:"write"`
		Read  []string `yaml:"read"`
	} `yaml:"serviceAccounts"`
}

// LoadTokens reads a tokens file (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the tokens file: %w", err)
	}
	t, err := ParseTokens(data)
	if err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens parses a tokens file, YAML or JSON:
//
//	tokens:
//	  - name: pr-pipelines
//	    sha256: 9f86d08...   # hex sha256 of the token, never the token
//	    write: pr
//	    read: [pr, main]
//	serviceAccounts:             # for --token-review (see TokenReview)
//	  - name: ci/pr-runner       # NAMESPACE/NAME, or NAMESPACE/* for any of it
//	    write: pr
//	    read: [pr, main]
//
// A principal with no read list reads its write scope.
func ParseTokens(data []byte) (*Tokens, error) {
	var f tokensFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	t := &Tokens{}
	names := map[string]bool{}
	for i, e := range f.Tokens {
		what := fmt.Sprintf("token %d (%s)", i+1, e.Name)
		if e.Name == "" {
			return nil, fmt.Errorf("token %d has no name", i+1)
		}
		if names[e.Name] {
			return nil, fmt.Errorf("%s: the name is used twice", what)
		}
		names[e.Name] = true
		sum, err := hex.DecodeString(e.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%s: sha256 is not 64 hex digits (write the token's sha256, e.g. printf %%s TOKEN | sha256sum)", what)
		}
		p, err := scopes(what, e.Write, e.Read)
		if err != nil {
			return nil, err
		}
		var te tokenEntry
		copy(te.sum[:], sum)
		if slices.ContainsFunc(t.entries, func(o tokenEntry) bool { return o.sum == te.sum }) {
			return nil, fmt.Errorf("%s: the same token as another", what)
		}
		p.Name = e.Name
		te.p = p
		t.entries = append(t.entries, te)
	}
	for i, e := range f.ServiceAccounts {
		what := fmt.Sprintf("serviceAccounts %d (%s)", i+1, e.Name)
		p, err := scopes(what, e.Write, e.Read)
		if err != nil {
			return nil, err
		}
		if err := t.sas.add(e.Name, p); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return t, nil
}

// scopes is the principal that writes write and reads read (default:
// [write]), both checked; what names it in errors.
func scopes(what, write string, read []string) (Principal, error) {
	if write != "" {
		if err := ValidateScope(write); err != nil {
			return Principal{}, fmt.Errorf("%s: write: %w", what, err)
		}
	}
	if len(read) == 0 && write != "" {
		read = []string{write}
	}
	for _, s := range read {
		if err := ValidateScope(s); err != nil {
			return Principal{}, fmt.Errorf("%s: read: %w", what, err)
		}
	}
	if len(read) == 0 {
		return Principal{}, fmt.Errorf("%s: neither write nor read: it could do nothing", what)
	}
	return Principal{Write: write, Read: slices.Clone(read)}, nil
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.entries) }

// ServiceAccounts are the file's serviceAccounts entries.
func (t *Tokens) ServiceAccounts() *ServiceAccounts { return &t.sas }

// Authenticate implements Authenticator: the token's sha256 is compared
// with every entry's in constant time.
func (t *Tokens) Authenticate(r *http.Request) (*Principal, error) {
	tok, err := credential(r)
	if tok == "" || err != nil {
		return nil, err
	}
	if p := t.lookup(tok); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w: unknown token", ErrUnauthenticated)
}

// lookup is the principal of the static token tok, or nil: its sha256 is
// compared with every entry's in constant time.
func (t *Tokens) lookup(tok string) *Principal {
	sum := sha256.Sum256([]byte(tok))
	var found *Principal
	for i := range t.entries {
		if subtle.ConstantTimeCompare(sum[:], t.entries[i].sum[:]) == 1 {
			found = &t.entries[i].p
		}
	}
	if found == nil {
		return nil
	}
	p := *found
	return &p
}
