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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/cachekey"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Options are the flags shared by the commands.
type Options struct {
	Patterns        []string
	WorkDir         string
	Folders         []string
	URI             string // --source / --target: store URL with the key as its last element
	StoreURL        string // --store: store URL alone
	Key             string // --key: key or template with {{hash}}
	RestoreKeys     []string
	BlobQueryParams string
	Insecure        bool
	Force           bool
	Fetched         string
	Strict          bool
	Quiet           bool
	Output          string
	ResultsDir      string
	Timeout         time.Duration
	IdleTimeout     time.Duration
	StallTimeout    time.Duration
	MaxIndexEntries int64
	Scope           string // --scope: keys are SCOPE_KEY
	FallbackScope   string // --fallback-scope: restore from this scope's entries after Scope's
	Jobs            int
	CrossPlatform   bool
	LookupOnly      bool
	FailOnMiss      bool
	ReadOnly        bool

	stdout, stderr io.Writer
	start          time.Time
	ctx            context.Context // the command's, before --timeout: its cause tells a signal
	target         string          // key's --target, an alias of --source
	lastLog        atomic.Int64
	logMu          sync.Mutex // progress and wait lines come from other goroutines
	idle           *idleWatch
	scope          string // Scope as keyAndStore mapped it
	// inputs is what the last keyAndStore computed the key from.
	inputs *store.KeyInputs
}

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "CACHE_"

func (o *Options) addKeyFlags(fs *pflag.FlagSet) {
	fs.Var(newList(&o.Patterns, false), "pattern", "glob of the files the key is computed from, relative to --workingdir or starting with it as given (repeatable or a comma list; ** matches any depth; !glob excludes). Default: detected from the lock files in --workingdir")
	fs.StringVar(&o.WorkDir, "workingdir", ".", "directory the patterns are relative to, and the cached folders' names in the entry")
	fs.Var(newList(&o.Folders, true), "folder", "directory to cache (repeatable or a comma list); its files never count in the key")
	fs.StringVar(&o.Key, "key", "", "cache key, or a template where {{hash}}, {{os}} and {{arch}} are replaced (default: the last element of --source/--target)")
}

// listValue is a repeatable flag that also takes a list in one value: one
// item per line, or comma-separated (commas inside {braces} belong to a
// glob). With paths, a value that names an existing path is one item even
// if it has a comma.
type listValue struct {
	items *[]string
	paths bool
}

func newList(p *[]string, paths bool) *listValue { return &listValue{items: p, paths: paths} }

func (l *listValue) String() string {
	if l.items == nil {
		return ""
	}
	return strings.Join(*l.items, ",")
}

func (l *listValue) Set(v string) error {
	if l.paths && !strings.Contains(v, "\n") {
		if _, err := os.Lstat(strings.TrimSpace(v)); err == nil {
			*l.items = append(*l.items, strings.TrimSpace(v))
			return nil
		}
	}
	*l.items = append(*l.items, splitList(v)...)
	return nil
}

func (l *listValue) Type() string { return "list" }

func (o *Options) addStoreFlags(fs *pflag.FlagSet, uriFlag, uriHelp string) {
	fs.StringVar(&o.URI, uriFlag, "", uriHelp)
	fs.StringVar(&o.StoreURL, "store", "", "store URL without a key (file:///dir, oci://registry/repo, s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix); use with --key")
	fs.StringVar(&o.BlobQueryParams, "blob-query-params", "", "query parameters appended to the store URL (e.g. ?endpoint=http://minio:9000&use_path_style=true), as the reference tool's BLOB_QUERY_PARAMS")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the store (--insecure, --insecure=false or --insecure false)")
	fs.Var(newList(&o.RestoreKeys, false), "restore-keys", "key prefix to fall back to when the exact key misses, newest entry first (repeatable or a comma list, tried in order)")
	fs.BoolVar(&o.Strict, "strict", false, "exit 1 on a miss or a transient cache error instead of warning")
	fs.BoolVar(&o.Quiet, "quiet", false, "print warnings only")
	fs.StringVar(&o.Output, "output", "text", "text, or json: one JSON line with the outcome on stdout")
	fs.StringVar(&o.ResultsDir, "results-dir", "", "directory to write one file per result into (status, error, key, seconds ...; see README): Tekton step results")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up after this long (a warning, as any transient store problem)")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", 2*time.Minute, "give up on the command when the store sends or takes nothing for this long while a request is in flight, retries included (0: never)")
	addStallFlag(fs, &o.StallTimeout)
	fs.Int64Var(&o.MaxIndexEntries, "max-index-entries", archive.DefaultMaxIndexEntries, "refuse an entry whose index lists more files than this (a hostile or broken store); decoding costs about 850 bytes per entry")
	fs.IntVar(&o.Jobs, "jobs", 0, "packs compressed (save) or downloaded and extracted (restore) at once; 0 picks from the number of CPUs")
	fs.BoolVar(&o.CrossPlatform, "cross-platform", false, "the cache is platform-neutral: restore entries saved on another OS/architecture (and let a save replace them)")
}

// addStallFlag adds --stall-timeout, the store layer's per-request stall
// limit: a request cut by it is retried, where --idle-timeout gives up on
// the whole command.
func addStallFlag(fs *pflag.FlagSet, p *time.Duration) {
	fs.DurationVar(p, "stall-timeout", store.DefaultStallTimeout, "cut a store request that moves no byte for this long and retry it (each attempt; 0: never)")
}

// stallOption is --stall-timeout as store.Options.StallTimeout wants it.
func stallOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// addScopeFlag adds --scope; with fallback, --fallback-scope too (fetch).
func (o *Options) addScopeFlags(fs *pflag.FlagSet, fallback bool) {
	fs.StringVar(&o.Scope, "scope", "", "keep entries apart by who wrote them: every key and restore key becomes SCOPE_KEY (letters, digits and '-'; '/', '_' and the rest become '-'), e.g. main, or pr-42 for a pull request")
	if fallback {
		fs.StringVar(&o.FallbackScope, "fallback-scope", "", "after --scope's own entries, restore from this scope's (the exact key, then the restore keys), e.g. main for a pull request; never the other way")
	}
}

// scopeSeparator ends a scope in a key. A scope never holds it, so a
// scope's prefix (main_) matches its own entries only, never another
// scope's (main-x_...), whatever names untrusted runs pick.
const scopeSeparator = "_"

// scopeName maps a --scope or --fallback-scope value to the scope grammar,
// [A-Za-z0-9][A-Za-z0-9-]{0,63}, saying so when it changed it.
func (o *Options) scopeName(flag, v string) (string, error) {
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
		o.infof("--%s %q: using %q (a scope holds letters, digits and '-' only)", flag, v, mapped)
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

// envName is the environment variable of a flag.
func envName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its CACHE_*
// variable. List flags take one value per line, or comma-separated values
// (commas inside {braces} belong to a glob), as on the command line.
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || v == "" {
			return
		}
		if f.Value.Type() == "bool" {
			if _, perr := strconv.ParseBool(strings.TrimSpace(v)); perr != nil {
				err = fmt.Errorf("%s=%q is not a boolean: use true or false", envName(f.Name), v)
				return
			}
			v = strings.TrimSpace(v)
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, serr)
		}
	})
	return err
}

// splitList splits on newlines, or on commas outside braces.
func splitList(v string) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if strings.Contains(v, "\n") {
		for _, l := range strings.Split(v, "\n") {
			add(l)
		}
		return out
	}
	depth, start := 0, 0
	for i, c := range v {
		switch c {
		case '{':
			depth++
		case '}':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				add(v[start:i])
				start = i + 1
			}
		}
	}
	add(v[start:])
	return out
}

// keyAndStore works out the store URL and the key from --source/--target or
// --store and --key, hashing the pattern files when the key has {{hash}}.
// Every error it returns is a misconfiguration.
func (o *Options) keyAndStore(needStore bool) (storeURL, key string, hash *cachekey.Result, err error) {
	template := o.Key
	storeURL = o.StoreURL
	if o.URI != "" {
		storeURL = o.URI
		if uriHasKey(o.URI, o.Key != "") {
			su, k, serr := store.SplitKey(o.URI)
			if serr != nil {
				return "", "", nil, serr
			}
			storeURL = su
			if template == "" {
				template = k
			}
		}
	}
	if needStore && storeURL == "" {
		return "", "", nil, errors.New("no store: pass --source (fetch) or --target (upload) with a URI such as oci://registry/repo:go-{{hash}}, or --store URL with --key")
	}
	if needStore {
		if _, err := store.ParseURL(storeURL); err != nil {
			return "", "", nil, err
		}
	}
	if template == "" {
		template = cachekey.HashPlaceholder
	}
	if fi, err := os.Stat(o.WorkDir); o.WorkDir != "" && (err != nil || !fi.IsDir()) {
		return "", "", nil, fmt.Errorf("working dir %s is not a directory: set --workingdir", o.WorkDir)
	}
	h := ""
	if cachekey.HasHash(template) || len(o.Patterns) > 0 {
		hash, err = cachekey.Compute(cachekey.Options{WorkDir: o.WorkDir, Patterns: o.Patterns, Exclude: o.Folders})
		if err != nil {
			return "", "", nil, err
		}
		h = hash.Hash
	}
	if key, err = o.expandKey(template, h, false); err != nil {
		return "", "", nil, err
	}
	if o.scope, err = o.scopeName("scope", o.Scope); err != nil {
		return "", "", nil, err
	}
	if key = withScope(o.scope, key); o.scope != "" {
		if err := store.ValidateKey(key); err != nil {
			return "", "", nil, fmt.Errorf("the key with its scope: %w", err)
		}
	}
	o.inputs = keyInputs(template, o.URI, hash)
	if o.BlobQueryParams != "" {
		q := strings.TrimLeft(o.BlobQueryParams, "?&")
		if strings.Contains(storeURL, "?") {
			storeURL += "&" + q
		} else {
			storeURL += "?" + q
		}
	}
	return storeURL, key, hash, nil
}

// expandKey expands a key (or restore-key prefix) template and maps a key
// that is not valid in every store (the reference tool's cache-go:HASH, a
// branch name with '/') to a valid one, saying so.
func (o *Options) expandKey(template, hash string, prefix bool) (string, error) {
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
		o.infof("%s %q is not valid in every store: using %q (':', '/', '@', '+' and '=' become '-')", what, k, mapped)
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

// resolve works out the store URL, the key and the restore keys, and says
// how the key was made. Every error it returns is a misconfiguration.
func (o *Options) resolve() (storeURL, key string, restoreKeys []string, err error) {
	storeURL, key, hash, err := o.keyAndStore(true)
	if err != nil {
		return "", "", nil, err
	}
	var h string
	if hash != nil {
		h = hash.Hash
		o.infof("key %s from %d file(s) matching %s in %s", key, len(hash.Files), strings.Join(hash.Patterns, ", "), hash.WorkDir)
	}
	restoreKeys, err = o.restoreKeys(h)
	if err != nil {
		return "", "", nil, err
	}
	restoreKeys, err = o.scopeRestoreKeys(key, restoreKeys)
	return storeURL, key, restoreKeys, err
}

// scopeRestoreKeys puts the restore keys in --scope, then, with
// --fallback-scope, adds the key and the restore keys in that scope: a
// pull request's run falls back to main's entries, main's never to a
// pull request's.
func (o *Options) scopeRestoreKeys(key string, restoreKeys []string) ([]string, error) {
	fallback, err := o.scopeName("fallback-scope", o.FallbackScope)
	switch {
	case err != nil:
		return nil, err
	case fallback != "" && o.scope == "":
		return nil, errors.New("--fallback-scope without --scope: set the scope this run writes to (e.g. --scope pr-42 --fallback-scope main)")
	case o.scope == "":
		return restoreKeys, nil
	}
	unscoped := strings.TrimPrefix(key, o.scope+scopeSeparator)
	var out []string
	for _, rk := range restoreKeys {
		out = append(out, withScope(o.scope, rk))
	}
	if fallback != "" && fallback != o.scope {
		out = append(out, withScope(fallback, unscoped))
		for _, rk := range restoreKeys {
			out = append(out, withScope(fallback, rk))
		}
	}
	for _, k := range out {
		if err := store.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("a restore key with its scope: %w", err)
		}
	}
	return out, nil
}

// withTimeout bounds a command by --timeout.
func (o *Options) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.Timeout > 0 {
		return context.WithTimeout(ctx, o.Timeout)
	}
	return context.WithCancel(ctx)
}

// openWatched opens the store with --idle-timeout watching it: cancel is
// the command's, called when the store stalls. stop ends the watch.
func (o *Options) openWatched(ctx context.Context, storeURL string, cancel context.CancelFunc) (store.Store, func(), error) {
	st, err := openStore(ctx, o, storeURL)
	if err != nil {
		return nil, func() {}, err
	}
	st, w, stop := watchIdle(st, o.IdleTimeout, cancel)
	o.idle = w
	return st, stop, nil
}

func (o *Options) restoreKeys(hash string) ([]string, error) {
	var out []string
	for _, rk := range o.RestoreKeys {
		rk, err := o.expandKey(rk, hash, true)
		if err != nil {
			return nil, fmt.Errorf("--restore-keys: %w", err)
		}
		out = append(out, rk)
	}
	return out, nil
}

func (o *Options) infof(format string, args ...any) {
	o.lastLog.Store(time.Now().UnixNano())
	if !o.Quiet {
		o.logMu.Lock()
		fmt.Fprintf(o.stderr, format+"\n", args...)
		o.logMu.Unlock()
	}
}

// waitInterval is how long the command may be silent before it says it is
// still waiting for the store.
var waitInterval = 10 * time.Second

// watch prints a line whenever nothing was printed for waitInterval until
// stop is called, so that a store that accepts connections and never
// answers is not silence until --timeout.
func (o *Options) watch(storeURL string) (stop func()) {
	every := waitInterval
	done, exited := make(chan struct{}), make(chan struct{})
	t := time.NewTicker(every / 2)
	o.lastLog.Store(time.Now().UnixNano())
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				if time.Since(time.Unix(0, o.lastLog.Load())) >= every {
					o.infof("still waiting for %s (%s so far; gives up after --timeout %s)", storeName(storeURL), time.Since(o.start).Round(time.Second), o.Timeout)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { t.Stop(); close(done); <-exited }
}

func (o *Options) warnf(format string, args ...any) {
	o.logMu.Lock()
	defer o.logMu.Unlock()
	fmt.Fprintf(o.stderr, "warning: "+format+"\n", args...)
}

// checkOutput checks the flags fetch and upload share, and applies
// --max-index-entries.
func (o *Options) checkOutput() error {
	if o.Output != "text" && o.Output != "json" {
		return fmt.Errorf("--output %q: use text or json", o.Output)
	}
	if o.MaxIndexEntries <= 0 {
		return fmt.Errorf("--max-index-entries %d: use a positive number of entries", o.MaxIndexEntries)
	}
	archive.SetMaxIndexEntries(o.MaxIndexEntries)
	if len(o.Folders) == 0 {
		return errors.New("no --folder given: pass the directory to cache, e.g. --folder $GOCACHE")
	}
	return nil
}

func bindEnv(cmd *cobra.Command, o *Options) {
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		o.stdout, o.stderr, o.start, o.ctx = cmd.OutOrStdout(), cmd.ErrOrStderr(), time.Now(), cmd.Context()
		if err := applyEnv(cmd.Flags()); err != nil {
			return usageError{err}
		}
		return nil
	}
}
