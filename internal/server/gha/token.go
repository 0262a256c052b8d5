package gha

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tekton-cache/tekton-cache/internal/server"
)

// The claims this server puts in a runtime token and requires back.
const (
	// Issuer is the token's "iss".
	Issuer = "tekton-cache"
	// Audience is the token's "aud": a token of this front end is good for
	// nothing else.
	Audience = "tekton-cache-gha"
)

// DefaultTokenTTL is how long a runtime token lasts unless
// Options.TokenTTL says otherwise: longer than a long build.
const DefaultTokenTTL = 6 * time.Hour

// The permission bits of an "ac" scope, as GitHub's and go-actions-cache's.
const (
	permRead  = 1
	permWrite = 2
)

// acScope is one scope of the "ac" claim (a JSON string in the token).
type acScope struct {
	Scope      string `json:"Scope"`
	Permission int    `json:"Permission"`
}

// claims are a runtime token's claims.
type claims struct {
	// AC is the JSON of the scopes, in read order; the write scope has
	// bit 2. go-actions-cache requires it to be a string.
	AC string `json:"ac"`
	jwt.RegisteredClaims
}

// keys are the two keys derived from the signing key: one signs tokens,
// the other the blob URLs, so that neither can pass for the other.
type keys struct {
	jwt, url []byte
}

func deriveKeys(secret []byte) keys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	return keys{jwt: derive("tekton-cache gha token"), url: derive("tekton-cache gha blob url")}
}

// encodeAC is the "ac" claim of p: its read scopes in order (bit 1), the
// write scope with bit 2 (appended when it does not read it).
func encodeAC(p *server.Principal) (string, error) {
	var ac []acScope
	for _, s := range p.Read {
		perm := permRead
		if s == p.Write {
			perm |= permWrite
		}
		ac = append(ac, acScope{Scope: s, Permission: perm})
	}
	if p.Write != "" && !slices.Contains(p.Read, p.Write) {
		ac = append(ac, acScope{Scope: p.Write, Permission: permWrite})
	}
	data, err := json.Marshal(ac)
	return string(data), err
}

// decodeAC is the principal of an "ac" claim; every scope is checked.
func decodeAC(name, s string) (*server.Principal, error) {
	var ac []acScope
	if err := json.Unmarshal([]byte(s), &ac); err != nil {
		return nil, fmt.Errorf("the token's ac claim is not a list of scopes: %w", err)
	}
	p := &server.Principal{Name: name}
	for _, a := range ac {
		if err := server.ValidateScope(a.Scope); err != nil {
			return nil, fmt.Errorf("the token's ac claim: %w", err)
		}
		if a.Permission&permRead != 0 && !slices.Contains(p.Read, a.Scope) {
			p.Read = append(p.Read, a.Scope)
		}
		if a.Permission&permWrite != 0 {
			if p.Write != "" && p.Write != a.Scope {
				return nil, errors.New("the token's ac claim gives write on two scopes")
			}
			p.Write = a.Scope
		}
	}
	return p, nil
}

// mint returns a runtime token for p, valid from now for ttl.
func (k keys) mint(p *server.Principal, now time.Time, ttl time.Duration) (string, time.Time, error) {
	ac, err := encodeAC(p)
	if err != nil {
		return "", time.Time{}, err
	}
	exp := now.Add(ttl).Truncate(time.Second)
	c := claims{AC: ac, RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    Issuer,
		Audience:  jwt.ClaimStrings{Audience},
		Subject:   p.Name,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), // another replica's clock may be behind
		ExpiresAt: jwt.NewNumericDate(exp),
	}}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(k.jwt)
	return tok, exp, err
}

// ErrBadToken is wrapped by the error of a runtime token refused.
var ErrBadToken = errors.New("bad runtime token")

// verify checks a runtime token (signature, algorithm, issuer, audience,
// exp and nbf, both required) and returns the principal its claims give.
func (k keys) verify(tok string, now time.Time) (*server.Principal, error) {
	var c claims
	_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return k.jwt, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(30*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (ask POST /v1/gha/token for a new one)", ErrBadToken, err)
	}
	if c.NotBefore == nil {
		return nil, fmt.Errorf("%w: no nbf claim", ErrBadToken)
	}
	p, err := decodeAC(c.Subject, c.AC)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	return p, nil
}
