package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Statuses a command reports in its status result and JSON line.
const (
	statusHit      = "hit"      // fetch: the exact key was restored
	statusFallback = "fallback" // fetch: a restore key's entry (or part of the exact one) was restored
	statusMiss     = "miss"     // fetch: no usable entry
	statusSaved    = "saved"    // upload: an entry was saved
	statusSkipped  = "skipped"  // upload: nothing to save (the key exists, fetched=true, empty folders)
	statusError    = "error"    // either: a misconfiguration (exit 2) or a store problem (a warning)
)

// The results of fetch and upload: one struct per command, whose
// `result:"name"` tags name the results files (Tekton step results, which
// the StepActions declare) and the keys of the --output json line, both
// written by one encoder (fields). A tag's ",omitempty" leaves the field
// out while it is the zero value (a nil pointer: not known on this path).

// results is a command's results struct.
type results interface{ base() *baseResult }

// baseResult are the results every fetch and upload reports.
type baseResult struct {
	Status  string  `result:"status"`
	Error   string  `result:"error"`
	Seconds float64 `result:"seconds"`
	Key     string  `result:"key"`
	Store   string  `result:"store"`
	Reason  string  `result:"reason"`
}

func (b *baseResult) base() *baseResult { return b }

// fetchResult is what fetch reports.
type fetchResult struct {
	baseResult
	Fetched     bool   `result:"fetched"`
	Restored    bool   `result:"restored"`
	MatchedKey  string `result:"matched-key"`
	RestoreKey  string `result:"restore-key"`
	Bytes       int64  `result:"bytes"`
	Files       int    `result:"files"`
	Downloaded  int64  `result:"downloaded"`
	Written     int64  `result:"written"`
	Present     int    `result:"present"`
	HashedFiles *int   `result:"hashed-files,omitempty"` // once the store answered
	AgeSeconds  int64  `result:"age-seconds"`
	Created     string `result:"created"`
	Platform    string `result:"platform"`
	Diagnosis   string `result:"diagnosis,omitempty"` // a miss: why, when it can tell
}

// uploadResult is what upload reports.
type uploadResult struct {
	baseResult
	Uploaded      bool   `result:"uploaded"`
	Replaced      string `result:"replaced"`
	Bytes         int64  `result:"bytes"`
	Files         int    `result:"files"`
	ReusedFiles   int    `result:"reused-files"`
	UploadedBytes int64  `result:"uploaded-bytes"`
	UploadedBlobs int    `result:"uploaded-blobs"`
	NewPacks      int    `result:"new-packs"`
	ReusedPacks   int    `result:"reused-packs"`
	HashedFiles   *int   `result:"hashed-files,omitempty"` // once saved
}

// field is one result: its name and value.
type field struct {
	name  string
	value any
}

// fields lists the results of v, a struct or a pointer to one, by name:
// its `result` tags, embedded structs' included.
func fields(v any) []field {
	var out []field
	var walk func(rv reflect.Value)
	walk = func(rv reflect.Value) {
		for rv.Kind() == reflect.Pointer {
			rv = rv.Elem()
		}
		rt := rv.Type()
		for i := range rt.NumField() {
			sf, fv := rt.Field(i), rv.Field(i)
			if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
				walk(fv)
				continue
			}
			tag, ok := sf.Tag.Lookup("result")
			if !ok {
				continue
			}
			name, opt, _ := strings.Cut(tag, ",")
			if opt == "omitempty" && fv.IsZero() {
				continue
			}
			if fv.Kind() == reflect.Pointer {
				fv = fv.Elem()
			}
			out = append(out, field{name, fv.Interface()})
		}
	}
	walk(reflect.ValueOf(v))
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// marshalResults is the JSON object of v's results, keys sorted.
func marshalResults(v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields(v) {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(f.name)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// maxResultError bounds the error result file: Tekton keeps every result of
// a step in a 4 KiB termination message.
const maxResultError = 512

// writeResults writes one file per result of v into dir: lists are left
// out (they fit no step result), seconds have three decimals, and the
// error is cut to maxResultError bytes.
func writeResults(dir string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	for _, f := range fields(v) {
		var s string
		switch v := f.value.(type) {
		case float64:
			s = strconv.FormatFloat(v, 'f', 3, 64)
		case string:
			s = v
			if f.name == "error" && len(s) > maxResultError {
				s = s[:maxResultError-3] + "..."
			}
		default:
			if k := reflect.TypeOf(v).Kind(); k == reflect.Slice || k == reflect.Map {
				continue
			}
			s = fmt.Sprint(v)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(s), 0o644); err != nil {
			return fmt.Errorf("writing results: %w", err)
		}
	}
	return nil
}

// report fills in status, error and seconds, then writes the results files
// and the JSON line.
func (o *transferOptions) report(res results, status string, cause error) error {
	b := res.base()
	b.Status, b.Error = status, ""
	if cause != nil {
		b.Error = oneLine(cause.Error())
	}
	b.Seconds = time.Since(o.start).Seconds()
	if o.ResultsDir != "" {
		if err := writeResults(o.ResultsDir, res); err != nil {
			return err
		}
	}
	if o.Output == "json" {
		return printResults(o.stdout, res)
	}
	return nil
}

// printResults writes v's results as one JSON line.
func printResults(w io.Writer, v any) error {
	data, err := marshalResults(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(data))
	return err
}

// ErrStrict is returned when --strict (or --fail-on-miss) turns a miss or a
// cache error into a failure (exit 1).
var ErrStrict = errors.New("strict mode")

// fail reports a failed command: a misconfiguration is exit 2 whatever
// --strict says; a store problem is a warning (exit 0) unless --strict.
func (o *transferOptions) fail(res results, err error, what string) error {
	err = inFlagTerms(err)
	if isConfigError(err) {
		if rerr := o.report(res, statusError, err); rerr != nil {
			o.warnf("%v", rerr)
		}
		return usageError{err}
	}
	cause := oneLine(err.Error())
	if in, ok := interrupted(o.ctx); ok {
		// A signal: the command stopped; it is neither a warning nor
		// --strict's failure, and the process exits 128+signal.
		cause = in.Error() + ": " + cause
		if rerr := o.report(res, statusError, errors.New(cause)); rerr != nil {
			o.warnf("%v", rerr)
		}
		return fmt.Errorf("%s: %w", what, errors.New(cause))
	}
	switch {
	case o.idle != nil && o.idle.fired.Load():
		cause = fmt.Sprintf("gave up: the store sent and took nothing for %s (--idle-timeout): %s", o.IdleTimeout, cause)
	case errors.Is(err, context.DeadlineExceeded) && o.Timeout > 0:
		cause = fmt.Sprintf("gave up after %s (--timeout, the TIMEOUT param): %s", o.Timeout, cause)
	}
	if rerr := o.report(res, statusError, errors.New(cause)); rerr != nil {
		o.warnf("%v", rerr)
	}
	msg := what + ": " + cause
	if o.Strict {
		return fmt.Errorf("%w: %s", ErrStrict, msg)
	}
	o.warnf("%s", msg)
	return nil
}
