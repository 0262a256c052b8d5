// Package cli is the `cache` command line: fetch/restore, upload/save, key
// and version. Every flag can also be set through a CACHE_* environment
// variable (--restore-keys is CACHE_RESTORE_KEYS), which is how the Tekton
// StepActions pass their params without splicing them into a script.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
)

// console is a running command's output and clock: every command's
// options embed it, and bindEnv fills it in.
type console struct {
	stdout, stderr io.Writer
	quiet          bool // --quiet, where the command has it
	start          time.Time
	ctx            context.Context // the command's, before --timeout: its cause tells a signal
	lastLog        atomic.Int64
	logMu          sync.Mutex // progress and wait lines come from other goroutines
}

func (c *console) infof(format string, args ...any) {
	c.lastLog.Store(time.Now().UnixNano())
	if !c.quiet {
		c.logMu.Lock()
		fmt.Fprintf(c.stderr, format+"\n", args...)
		c.logMu.Unlock()
	}
}

func (c *console) warnf(format string, args ...any) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	fmt.Fprintf(c.stderr, "warning: "+format+"\n", args...)
}

// bindEnv makes cmd fill in c and apply the CACHE_* variables before it
// runs; quiet, when the command has --quiet, is read after them.
func bindEnv(cmd *cobra.Command, c *console, quiet *bool) {
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		c.stdout, c.stderr, c.start, c.ctx = cmd.OutOrStdout(), cmd.ErrOrStderr(), time.Now(), cmd.Context()
		if err := applyEnv(cmd.Flags()); err != nil {
			return usageError{err}
		}
		if quiet != nil {
			c.quiet = *quiet
		}
		return nil
	}
}

// openStore opens the store at url with the store flags.
func openStore(ctx context.Context, c *console, s *StoreFlags, url string) (store.Store, error) {
	return all.Mux().Open(ctx, url, store.Options{Insecure: s.Insecure, StallTimeout: stallOption(s.StallTimeout), TokenFile: s.TokenFile, Logf: c.infof})
}

// withTimeout bounds a command by --timeout.
func (s *StoreFlags) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.Timeout > 0 {
		return context.WithTimeout(ctx, s.Timeout)
	}
	return context.WithCancel(ctx)
}

// keyed is the store and the key a command works out from its key and
// store flags.
type keyed struct {
	storeURL, key string
	hash          *cachekey.Result // nil when no file was hashed
	scope         string           // --scope as it was mapped
	inputs        *store.KeyInputs // what the key was computed from
}

// keyAndStore works out the store URL and the key from --source/--target or
// --store and --key, hashing the pattern files when the key has {{hash}}.
// Every error it returns is a misconfiguration.
func keyAndStore(c *console, k *KeyFlags, s *StoreFlags, needStore bool) (*keyed, error) {
	template := k.Key
	storeURL := s.StoreURL
	if s.URI != "" {
		storeURL = s.URI
		if uriHasKey(s.URI, k.Key != "") {
			su, key, err := store.SplitKey(s.URI)
			if err != nil {
				return nil, err
			}
			storeURL = su
			if template == "" {
				template = key
			}
		}
	}
	if needStore && storeURL == "" {
		return nil, errors.New("no store: pass --source (fetch) or --target (upload) with a URI such as oci://registry/repo:go-{{hash}}, or --store URL with --key")
	}
	if needStore {
		if _, err := store.ParseURL(storeURL); err != nil {
			return nil, err
		}
	}
	if template == "" {
		template = cachekey.HashPlaceholder
	}
	if fi, err := os.Stat(k.WorkDir); k.WorkDir != "" && (err != nil || !fi.IsDir()) {
		return nil, fmt.Errorf("working dir %s is not a directory: set --workingdir", k.WorkDir)
	}
	out := &keyed{}
	h := ""
	if cachekey.HasHash(template) || len(k.Patterns) > 0 {
		hash, err := cachekey.Compute(cachekey.Options{WorkDir: k.WorkDir, Patterns: k.Patterns, Exclude: k.Folders})
		if err != nil {
			return nil, err
		}
		out.hash, h = hash, hash.Hash
	}
	var err error
	if out.key, err = expandKey(c, template, h, false); err != nil {
		return nil, err
	}
	if out.scope, err = scopeName(c, "scope", k.Scope); err != nil {
		return nil, err
	}
	if out.key = withScope(out.scope, out.key); out.scope != "" {
		if err := store.ValidateKey(out.key); err != nil {
			return nil, fmt.Errorf("the key with its scope: %w", err)
		}
	}
	out.inputs = keyInputs(template, s.URI, out.hash)
	out.storeURL = s.withQuery(storeURL)
	return out, nil
}

// expandKey expands a key (or restore-key prefix) template and maps a key
// that is not valid in every store (the reference tool's cache-go:HASH, a
// branch name with '/') to a valid one, saying so.
func expandKey(c *console, template, hash string, prefix bool) (string, error) {
	k, err := cachekey.ExpandAll(template, hash)
	if err != nil {
		return "", err
	}
	mapKey, what := store.MapKey, "key"
	if prefix {
		mapKey, what = store.MapPrefix, "restore key"
	}
	mapped, changed, err := mapKey(k)
	if err != nil {
		return "", err
	}
	if changed {
		c.infof("%s %q is not valid in every store: using %q (':', '/', '@', '+' and '=' become '-')", what, k, mapped)
	}
	return mapped, nil
}

// uriHasKey tells whether a --source/--target URI ends with a key: always,
// unless --key is given too and the URI has neither {{hash}} nor an OCI tag.
func uriHasKey(uri string, haveKey bool) bool {
	if !haveKey || cachekey.HasHash(uri) {
		return true
	}
	if rest, ok := strings.CutPrefix(uri, "oci://"); ok {
		rest, _, _ = strings.Cut(rest, "?")
		return strings.LastIndex(rest, ":") > strings.LastIndex(rest, "/")
	}
	return false
}

// scopeSeparator ends a scope in a key. A scope never holds it, so a
// scope's prefix (main_) matches its own entries only, never another
// scope's (main-x_...), whatever names untrusted runs pick.
const scopeSeparator = "_"

// scopeName maps a --scope or --fallback-scope value to the scope grammar,
// [A-Za-z0-9][A-Za-z0-9-]{0,63}, saying so when it changed it.
func scopeName(c *console, flag, v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", nil
	}
	mapped := strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return '-'
	}, v)
	if len(mapped) > 64 || mapped[0] == '-' {
		return "", fmt.Errorf("%w: --%s %q: use 1-64 letters, digits or '-', starting with a letter or digit", store.ErrInvalidKey, flag, v)
	}
	if mapped != v {
		c.infof("--%s %q: using %q (a scope holds letters, digits and '-' only)", flag, v, mapped)
	}
	return mapped, nil
}

// withScope is key in scope: SCOPE_KEY, unless key already is.
func withScope(scope, key string) string {
	if scope == "" || strings.HasPrefix(key, scope+scopeSeparator) {
		return key
	}
	return scope + scopeSeparator + key
}
