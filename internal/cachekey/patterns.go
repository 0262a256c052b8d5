package cachekey

import (
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// A pattern is matched two ways, and a file matches when either does:
//
//   - as a doublestar glob against the file's path relative to the working
//     dir ("**/go.sum" matches go.sum and sub/go.sum);
//   - in the reference tool's dialect (moby/patternmatcher, as
//     openshift-pipelines/tekton-caches uses it) against the path as a walk
//     from the working dir, as given, names it: "/workspace/source/go.sum"
//     when --workingdir is /workspace/source. There '*' stays inside one path
//     element, "**/" matches any number of leading directories, any other
//     "**" matches anything (so "**go.mod" is any path ending in go.mod),
//     and an exclusion that matches a directory excludes the files under it.
//
// Patterns apply in order: a pattern starting with '!' excludes the files
// it matches from what the patterns before it included.
type pattern struct {
	raw     string
	exclude bool
	glob    string         // doublestar, relative to the working dir
	re      *regexp.Regexp // reference dialect, against the walked path
}

func compilePatterns(raw []string) ([]pattern, error) {
	out := make([]pattern, 0, len(raw))
	includes := 0
	for _, r := range raw {
		p := pattern{raw: r}
		body := strings.TrimSpace(r)
		if strings.HasPrefix(body, "!") {
			p.exclude = true
			body = strings.TrimSpace(body[1:])
		}
		if body == "" {
			return nil, fmt.Errorf("invalid pattern %q: empty; write a glob such as **/go.sum (or !dir/** to exclude)", r)
		}
		slashed := filepath.ToSlash(body)
		p.glob = strings.TrimPrefix(slashed, "./")
		if !doublestar.ValidatePattern(p.glob) {
			return nil, fmt.Errorf("invalid pattern %q: check its brackets and braces", r)
		}
		cleaned := filepath.ToSlash(filepath.Clean(body))
		re, err := referenceRegexp(cleaned)
		if err != nil {
			return nil, fmt.Errorf("invalid pattern %q: %v", r, err)
		}
		p.re = re
		if !p.exclude {
			includes++
		}
		out = append(out, p)
	}
	if includes == 0 && len(out) > 0 {
		return nil, fmt.Errorf("patterns %s only exclude: add one that includes the lock files, e.g. **/go.sum", strings.Join(quoteAll(raw), ", "))
	}
	return out, nil
}

// referenceRegexp translates a pattern of the reference tool's dialect.
func referenceRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' && i+1 < len(p) && p[i+1] == '*':
			i++
			switch {
			case i+1 < len(p) && p[i+1] == '/':
				i++
				b.WriteString("(.*/)?")
			default:
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '\\':
			if i+1 >= len(p) {
				return nil, fmt.Errorf("it ends with a lone '\\'")
			}
			i++
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		case c == '[':
			end := strings.IndexByte(p[i+1:], ']')
			if end < 0 {
				return nil, fmt.Errorf("'[' without ']'")
			}
			class := p[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// matches tells whether p matches the file at rel (relative to the working
// dir) whose walked path is walked. An exclusion also matches the files
// under a directory it matches ("!vendor", "!**/node_modules").
func (p *pattern) matches(rel, walked string) bool {
	if ok, _ := doublestar.Match(p.glob, rel); ok {
		return true
	}
	if p.re.MatchString(walked) {
		return true
	}
	if !p.exclude {
		return false
	}
	for i := range len(rel) {
		if rel[i] == '/' {
			if ok, _ := doublestar.Match(p.glob, rel[:i]); ok {
				return true
			}
		}
	}
	for i := 1; i < len(walked); i++ {
		if walked[i] == '/' && p.re.MatchString(walked[:i]) {
			return true
		}
	}
	return false
}

// selected applies the patterns in order to one file.
func selected(ps []pattern, rel, walked string) bool {
	in := false
	for i := range ps {
		p := &ps[i]
		if p.exclude != in {
			continue // an exclusion only matters once included, and vice versa
		}
		if p.matches(rel, walked) {
			in = !p.exclude
		}
	}
	return in
}

// placeholder matches {{hash}}, {{os}} and {{arch}}, any case, spaces allowed.
var placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z_]*)\s*\}\}`)

// HasHash tells whether template has a {{hash}} placeholder (any spelling).
func HasHash(template string) bool {
	for _, m := range placeholder.FindAllStringSubmatch(template, -1) {
		if strings.EqualFold(m[1], "hash") {
			return true
		}
	}
	return false
}

// ExpandAll replaces {{hash}}, {{os}} and {{arch}} (any case, spaces inside
// the braces allowed) in template; os and arch are this machine's GOOS and
// GOARCH. An unknown placeholder is an error.
func ExpandAll(template, hash string) (string, error) {
	var bad string
	out := placeholder.ReplaceAllStringFunc(template, func(m string) string {
		name := strings.ToLower(placeholder.FindStringSubmatch(m)[1])
		switch name {
		case "hash":
			return hash
		case "os":
			return runtime.GOOS
		case "arch":
			return runtime.GOARCH
		}
		if bad == "" {
			bad = m
		}
		return m
	})
	if bad != "" {
		return "", fmt.Errorf("unknown placeholder %s in %q: use {{hash}}, {{os}} or {{arch}}", bad, template)
	}
	return out, nil
}
