package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// resultNames are the names v's result tags give, without options.
func resultNames(v any) map[string]bool {
	names := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			sf := t.Field(i)
			if sf.Anonymous {
				walk(sf.Type)
				continue
			}
			if tag, ok := sf.Tag.Lookup("result"); ok {
				name, _, _ := strings.Cut(tag, ",")
				names[name] = true
			}
		}
	}
	walk(reflect.TypeOf(v))
	return names
}

// TestStepActionResultsAreReported checks that every result a StepAction
// declares is a field of its command's results: a renamed tag would leave
// the step's result unwritten.
func TestStepActionResultsAreReported(t *testing.T) {
	for file, res := range map[string]any{"cache-fetch.yaml": fetchResult{}, "cache-upload.yaml": uploadResult{}} {
		data, err := os.ReadFile(filepath.Join("..", "..", "tekton", file))
		if err != nil {
			t.Fatal(err)
		}
		var sa struct {
			Spec struct {
				Results []struct{ Name string } `yaml:"results"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal(data, &sa); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(sa.Spec.Results) == 0 {
			t.Fatalf("%s declares no results", file)
		}
		names := resultNames(res)
		for _, r := range sa.Spec.Results {
			if !names[r.Name] {
				t.Errorf("%s declares result %q, which %T does not report", file, r.Name, res)
			}
		}
	}
}

// TestResultsEncoder checks that the JSON line is what json.Marshal makes
// of the results as a map (sorted keys, the same escaping) and that the
// results files hold the same values, lists left out.
func TestResultsEncoder(t *testing.T) {
	hashed := 0
	v := &fetchResult{
		baseResult: baseResult{Status: "hit", Error: strings.Repeat("e<&>", 200), Seconds: 1.23456, Key: "go-1", Store: "file:///x"},
		Fetched:    true, Bytes: 1 << 40, Files: 3, HashedFiles: &hashed, AgeSeconds: -1, Created: "2026-01-02T03:04:05Z",
	}
	got, err := marshalResults(v)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{
		"status": "hit", "error": v.Error, "seconds": 1.23456, "key": "go-1", "store": "file:///x", "reason": "",
		"fetched": true, "restored": false, "matched-key": "", "restore-key": "", "bytes": int64(1 << 40), "files": 3,
		"downloaded": int64(0), "written": int64(0), "present": 0, "hashed-files": 0, "age-seconds": int64(-1),
		"created": "2026-01-02T03:04:05Z", "platform": "",
	}
	want, _ := json.Marshal(m)
	if string(got) != string(want) {
		t.Errorf("marshalResults:\n got %s\nwant %s", got, want)
	}

	// omitempty: a nil pointer and an empty string are left out.
	v.HashedFiles, v.Diagnosis = nil, ""
	got, _ = marshalResults(v)
	if strings.Contains(string(got), "hashed-files") || strings.Contains(string(got), "diagnosis") {
		t.Errorf("omitempty fields written: %s", got)
	}

	dir := t.TempDir()
	v.HashedFiles, v.Diagnosis = &hashed, "why"
	if err := writeResults(dir, v); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var files []string
	for _, e := range ents {
		files = append(files, e.Name())
	}
	sort.Strings(files)
	for name := range m {
		if !contains(files, name) {
			t.Errorf("no results file %s in %v", name, files)
		}
	}
	keyDir := t.TempDir()
	if err := writeResults(keyDir, keyResult{Key: "k", Patterns: []string{"a"}, Files: []keyFile{{"d", "p"}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"patterns", "files", "detected"} {
		if _, err := os.Stat(filepath.Join(keyDir, name)); err == nil {
			t.Errorf("list result %s written as a file", name)
		}
	}
	if got := readResult(t, keyDir, "key"); got != "k" {
		t.Errorf("key result file = %q", got)
	}
	for name, want := range map[string]string{"seconds": "1.235", "bytes": "1099511627776", "fetched": "true", "hashed-files": "0", "diagnosis": "why", "age-seconds": "-1"} {
		if got := readResult(t, dir, name); got != want {
			t.Errorf("results file %s = %q, want %q", name, got, want)
		}
	}
	if e := readResult(t, dir, "error"); len(e) != maxResultError || !strings.HasSuffix(e, "...") {
		t.Errorf("error result: %d bytes %q, want cut to %d", len(e), e, maxResultError)
	}
}
