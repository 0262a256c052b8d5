package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// The flag groups commands build their options from. Each group's add
// method registers the group as fetch and upload have it; commands that
// take part of a group (key, explain, list, delete) register those flags
// themselves, with their own help, into the same fields.

// KeyFlags say what the key is computed from: --pattern, --workingdir,
// --folder, --key and --scope.
type KeyFlags struct {
	Patterns []string
	WorkDir  string
	Folders  []string
	Key      string // --key: key or template with {{hash}}
	Scope    string // --scope: keys are SCOPE_KEY
}

func (k *KeyFlags) add(fs *pflag.FlagSet) {
	fs.Var(newList(&k.Patterns, false), "pattern", "glob of the files the key is computed from, relative to --workingdir or starting with it as given (repeatable or a comma list; ** matches any depth; !glob excludes). Default: detected from the lock files in --workingdir")
	fs.StringVar(&k.WorkDir, "workingdir", ".", "directory the patterns are relative to, and the cached folders' names in the entry")
	fs.Var(newList(&k.Folders, true), "folder", "directory to cache (repeatable or a comma list); its files never count in the key")
	fs.StringVar(&k.Key, "key", "", "cache key, or a template where {{hash}}, {{os}} and {{arch}} are replaced (default: the last element of --source/--target)")
	fs.StringVar(&k.Scope, "scope", "", "keep entries apart by who wrote them: every key and restore key becomes SCOPE_KEY (letters, digits and '-'; '/', '_' and the rest become '-'), e.g. main, or pr-42 for a pull request")
}

// StoreFlags say which store to talk to and how: --source/--target,
// --store, --blob-query-params, --insecure, --stall-timeout and --timeout.
type StoreFlags struct {
	URI             string // --source / --target: store URL with the key as its last element
	StoreURL        string // --store: store URL alone
	BlobQueryParams string
	Insecure        bool
	StallTimeout    time.Duration
	Timeout         time.Duration
	TokenFile       string
}

func (s *StoreFlags) add(fs *pflag.FlagSet, uriFlag, uriHelp string) {
	fs.StringVar(&s.URI, uriFlag, "", uriHelp)
	fs.StringVar(&s.StoreURL, "store", "", "store URL without a key (file:///dir, oci://registry/repo, s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix); use with --key")
	fs.StringVar(&s.BlobQueryParams, "blob-query-params", "", "query parameters appended to the store URL (e.g. ?endpoint=http://minio:9000&use_path_style=true), as the reference tool's BLOB_QUERY_PARAMS")
	fs.BoolVar(&s.Insecure, "insecure", false, "allow plain HTTP and self-signed TLS certificates for the store (--insecure, --insecure=false or --insecure false)")
	fs.DurationVar(&s.Timeout, "timeout", 30*time.Minute, "give up after this long (a warning, as any transient store problem)")
	fs.StringVar(&s.TokenFile, "token-file", "", "file holding the bearer token for an http:// or https:// store (a projected ServiceAccount token; read again as it rotates; or set CACHE_TOKEN to the token itself)")
	s.addStall(fs)
}

// addStall adds --stall-timeout, the store layer's per-request stall
// limit: a request cut by it is retried, where --idle-timeout gives up on
// the whole command.
func (s *StoreFlags) addStall(fs *pflag.FlagSet) {
	fs.DurationVar(&s.StallTimeout, "stall-timeout", store.DefaultStallTimeout, "cut a store request that moves no byte for this long and retry it (each attempt; 0: never)")
}

// stallOption is --stall-timeout as store.Options.StallTimeout wants it.
func stallOption(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// withQuery is storeURL with --blob-query-params appended.
func (s *StoreFlags) withQuery(storeURL string) string {
	if s.BlobQueryParams == "" {
		return storeURL
	}
	sep := "?"
	if strings.Contains(storeURL, "?") {
		sep = "&"
	}
	return storeURL + sep + strings.TrimLeft(s.BlobQueryParams, "?&")
}

// ReportFlags say how fetch and upload report: --strict, --quiet,
// --output and --results-dir.
type ReportFlags struct {
	Strict     bool
	Quiet      bool
	Output     string
	ResultsDir string
}

func (r *ReportFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&r.Strict, "strict", false, "exit 1 on a miss or a transient cache error instead of warning")
	fs.BoolVar(&r.Quiet, "quiet", false, "print warnings only")
	fs.StringVar(&r.Output, "output", "text", "text, or json: one JSON line with the outcome on stdout")
	fs.StringVar(&r.ResultsDir, "results-dir", "", "directory to write one file per result into (status, error, key, seconds ...; see README): Tekton step results")
}

// checkOutput refuses an --output other than text and json.
func checkOutput(output string) error {
	if output != "text" && output != "json" {
		return usageError{fmt.Errorf("--output %q: use text or json", output)}
	}
	return nil
}

// TransferFlags tune how fetch and upload move an entry: --restore-keys,
// --idle-timeout, --max-index-entries, --jobs and --cross-platform.
type TransferFlags struct {
	RestoreKeys     []string
	IdleTimeout     time.Duration
	MaxIndexEntries int64
	Jobs            int
	CrossPlatform   bool
}

func (t *TransferFlags) add(fs *pflag.FlagSet) {
	fs.Var(newList(&t.RestoreKeys, false), "restore-keys", "key prefix to fall back to when the exact key misses, newest entry first (repeatable or a comma list, tried in order)")
	fs.DurationVar(&t.IdleTimeout, "idle-timeout", 2*time.Minute, "give up on the command when the store sends or takes nothing for this long while a request is in flight, retries included (0: never)")
	fs.Int64Var(&t.MaxIndexEntries, "max-index-entries", archive.DefaultMaxIndexEntries, "refuse an entry whose index lists more files than this (a hostile or broken store); decoding costs about 260 bytes per entry")
	fs.IntVar(&t.Jobs, "jobs", 0, "packs compressed (save) or downloaded and extracted (restore) at once; 0 picks from the number of CPUs (restore: from there, more while the downloads gain by it)")
	fs.BoolVar(&t.CrossPlatform, "cross-platform", false, "the cache is platform-neutral: restore entries saved on another OS/architecture (and let a save replace them)")
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

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "CACHE_"

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
