package storeerr

import (
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Redacted replaces every secret that Scrub and store.Redact remove.
const Redacted = "REDACTED"

// secretWords are the parts of a parameter name that mark its value as a
// credential: sig, signature, X-Amz-Signature, X-Amz-Security-Token,
// X-Amz-Credential, X-Goog-Signature, X-Goog-Credential, AccountKey,
// SharedAccessSignature, access_token, refresh_token, id_token,
// client_secret, password, assertion, api_key ...
var secretWords = []string{"key", "secret", "token", "sig", "password", "credential", "assertion"}

// SecretParam reports whether the value of the parameter name (in a URL
// query, a connection string or a message's name=value) may hold a
// credential. Case does not matter.
func SecretParam(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

var (
	// param matches name=value pairs, as in query strings, connection
	// strings and SDK messages.
	param = regexp.MustCompile(`([A-Za-z0-9_.-]+)=([^&;\s"',]+)`)
	// userinfo matches the password of a URL: scheme://user:password@.
	userinfo = regexp.MustCompile(`\b([A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*):[^/?#\s@]*@`)
	// authToken matches the token of an Authorization header.
	authToken = regexp.MustCompile(`(?i)\b(bearer|sharedkey|sharedkeylite|authorization:\s*basic)\s+[A-Za-z0-9._~+/=:-]+`)
)

// Scrub removes secrets from msg: every string in secrets of four bytes or
// more (as given and URL-encoded), the value of every parameter SecretParam
// names (sig=, AccountKey=, X-Amz-Signature=, access_token= ...), the
// password of a URL (scheme://user:password@host keeps the user), and the
// token of an Authorization header (Bearer, SharedKey, Basic).
func Scrub(msg string, secrets ...string) string {
	for _, s := range secrets {
		if len(s) < 4 {
			continue
		}
		msg = strings.ReplaceAll(msg, s, Redacted)
		if e := url.QueryEscape(s); e != s {
			msg = strings.ReplaceAll(msg, e, Redacted)
		}
	}
	msg = param.ReplaceAllStringFunc(msg, func(kv string) string {
		k, _, _ := strings.Cut(kv, "=")
		if SecretParam(k) {
			return k + "=" + Redacted
		}
		return kv
	})
	msg = userinfo.ReplaceAllString(msg, "$1@")
	return authToken.ReplaceAllString(msg, "$1 "+Redacted)
}

// SecretValues returns the credentials inside v, a value of a setting that
// holds secrets: v itself, and the values of the secret parameters of v
// read as a connection string (AccountName=a;AccountKey=k) or as a query
// string (sv=...&sig=...), so that Scrub finds each of them alone.
func SecretValues(v string) []string {
	if v == "" {
		return nil
	}
	out := []string{v}
	for part := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(part, "=")
		if ok && val != "" && SecretParam(strings.TrimSpace(k)) {
			out = append(out, val)
		}
	}
	if q, err := url.ParseQuery(strings.TrimPrefix(v, "?")); err == nil {
		for _, k := range slices.Sorted(maps.Keys(q)) {
			if !SecretParam(k) {
				continue
			}
			for _, val := range q[k] {
				if val != "" {
					out = append(out, val)
				}
			}
		}
	}
	return out
}
