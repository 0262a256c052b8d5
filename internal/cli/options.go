// Package cli is the `cache` command line: fetch/restore, upload/save, key
// and version. Every flag can also be set through a CACHE_* environment
// variable (--restore-keys is CACHE_RESTORE_KEYS), which is how the Tekton
// StepActions pass their params without splicing them into a script.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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
	Jobs            int

	stdout, stderr io.Writer
}

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "CACHE_"

func (o *Options) addKeyFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.Patterns, "pattern", nil, "glob of the files the key is computed from, relative to --workingdir (repeatable; ** matches any depth). Default: detected from the lock files in --workingdir")
	fs.StringVar(&o.WorkDir, "workingdir", ".", "directory the patterns are relative to")
	fs.StringArrayVar(&o.Folders, "folder", nil, "directory to cache (repeatable); its files never count in the key")
	fs.StringVar(&o.Key, "key", "", "cache key, or a template where {{hash}} is replaced by the hash of the pattern files (default: the last element of --source/--target)")
}

func (o *Options) addStoreFlags(fs *pflag.FlagSet, uriFlag, uriHelp string) {
	fs.StringVar(&o.URI, uriFlag, "", uriHelp)
	fs.StringVar(&o.StoreURL, "store", "", "store URL without a key (file:///dir, oci://registry/repo, s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix); use with --key")
	fs.StringVar(&o.BlobQueryParams, "blob-query-params", "", "query parameters appended to the store URL (e.g. ?endpoint=http://minio:9000&use_path_style=true), as the reference tool's BLOB_QUERY_PARAMS")
	fs.BoolVar(&o.Insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the store")
	fs.StringArrayVar(&o.RestoreKeys, "restore-keys", nil, "key prefix to fall back to when the exact key misses, newest entry first (repeatable, tried in order)")
	fs.BoolVar(&o.Strict, "strict", false, "exit non-zero on a miss or a cache error instead of warning")
	fs.BoolVar(&o.Quiet, "quiet", false, "print warnings only")
	fs.StringVar(&o.Output, "output", "text", "text, or json: one JSON line with the outcome on stdout")
	fs.StringVar(&o.ResultsDir, "results-dir", "", "directory to write one file per result into (fetched, restored, key, matched-key, bytes, seconds): Tekton step results")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "give up (as a miss, or a failed upload) after this long")
	fs.IntVar(&o.Jobs, "jobs", 0, "packs compressed (save) or downloaded and extracted (restore) at once; 0 picks from the number of CPUs")
}

// envName is the environment variable of a flag.
func envName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its CACHE_*
// variable. Repeatable flags take one value per line, or comma-separated
// values (commas inside {braces} belong to a glob).
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
		if f.Value.Type() == "stringArray" {
			for _, item := range splitList(v) {
				if serr := fs.Set(f.Name, item); serr != nil {
					err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, serr)
					return
				}
			}
			return
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
		return "", "", nil, errors.New("no store: pass --source/--target URI (e.g. oci://registry/repo:go-{{hash}}) or --store URL with --key")
	}
	if template == "" {
		template = cachekey.HashPlaceholder
	}
	key = template
	if strings.Contains(template, cachekey.HashPlaceholder) || len(o.Patterns) > 0 {
		hash, err = cachekey.Compute(cachekey.Options{WorkDir: o.WorkDir, Patterns: o.Patterns, Exclude: o.Folders})
		if err != nil {
			return "", "", nil, err
		}
		key = cachekey.Expand(template, hash.Hash)
	}
	if err := store.ValidateKey(key); err != nil {
		return "", "", nil, err
	}
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

// uriHasKey tells whether a --source/--target URI ends with a key: always,
// unless --key is given too and the URI has neither {{hash}} nor an OCI tag.
func uriHasKey(uri string, haveKey bool) bool {
	if !haveKey || strings.Contains(uri, cachekey.HashPlaceholder) {
		return true
	}
	if rest, ok := strings.CutPrefix(uri, "oci://"); ok {
		rest, _, _ = strings.Cut(rest, "?")
		return strings.LastIndex(rest, ":") > strings.LastIndex(rest, "/")
	}
	return false
}

// resolve works out the store URL, the key and the restore keys, and says
// how the key was made.
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
	return storeURL, key, restoreKeys, err
}

// withTimeout bounds a command by --timeout.
func (o *Options) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.Timeout > 0 {
		return context.WithTimeout(ctx, o.Timeout)
	}
	return context.WithCancel(ctx)
}

func (o *Options) restoreKeys(hash string) ([]string, error) {
	var out []string
	for _, rk := range o.RestoreKeys {
		rk = cachekey.Expand(rk, hash)
		if err := store.ValidatePrefix(rk); err != nil {
			return nil, fmt.Errorf("--restore-keys: %w", err)
		}
		out = append(out, rk)
	}
	return out, nil
}

func (o *Options) infof(format string, args ...any) {
	if !o.Quiet {
		fmt.Fprintf(o.stderr, format+"\n", args...)
	}
}

func (o *Options) warnf(format string, args ...any) {
	fmt.Fprintf(o.stderr, "warning: "+format+"\n", args...)
}

func (o *Options) checkOutput() error {
	if o.Output != "text" && o.Output != "json" {
		return fmt.Errorf("--output %q: use text or json", o.Output)
	}
	if len(o.Folders) == 0 {
		return errors.New("no --folder given: pass the directory to cache, e.g. --folder $GOCACHE")
	}
	return nil
}

// outcome is what a command reports: results files and the JSON line.
type outcome map[string]any

func (o *Options) report(out outcome) error {
	if o.ResultsDir != "" {
		if err := os.MkdirAll(o.ResultsDir, 0o755); err != nil {
			return fmt.Errorf("writing results: %w", err)
		}
		for k, v := range out {
			switch v.(type) {
			case map[string]any, []string:
				continue
			}
			s := fmt.Sprint(v)
			if f, ok := v.(float64); ok {
				s = strconv.FormatFloat(f, 'f', 3, 64)
			}
			if err := os.WriteFile(filepath.Join(o.ResultsDir, k), []byte(s), 0o644); err != nil {
				return fmt.Errorf("writing results: %w", err)
			}
		}
	}
	if o.Output == "json" {
		data, err := json.Marshal(out)
		if err != nil {
			return err
		}
		fmt.Fprintln(o.stdout, string(data))
	}
	return nil
}

// ErrStrict is returned when --strict turns a miss or a cache error into a
// failure.
var ErrStrict = errors.New("strict mode")

// failSoft reports a cache problem: a warning and exit 0, or an error with
// --strict.
func (o *Options) failSoft(err error) error {
	if o.Strict {
		return fmt.Errorf("%w: %w", ErrStrict, err)
	}
	o.warnf("%v", err)
	return nil
}

func bindEnv(cmd *cobra.Command, o *Options) {
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		o.stdout, o.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
		return applyEnv(cmd.Flags())
	}
}
