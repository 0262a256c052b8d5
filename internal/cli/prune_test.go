package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/gc"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
)

func TestParseAgeAndSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "1w2d3h": (9*24 + 3) * time.Hour} {
		if got, err := parseAge(in); err != nil || got != want {
			t.Errorf("parseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "7x", "d", "-1h", "1.5d", "7dd"} {
		if _, err := parseAge(bad); err == nil {
			t.Errorf("parseAge(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"10GB": 10e9, "500MiB": 500 << 20, "1.5G": 3 << 29, "1024": 1024, "2 kb": 2000} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "10XB", "-1GB", "GB", "1e400"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

// TestManageEntries: list counts shared bytes once and says what each
// entry owns; inspect and diff read entries; prune plans, then removes
// what the policy says, and what it keeps still restores.
func TestManageEntries(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	for i, k := range []string{"go-1", "go-2", "go-3"} {
		os.WriteFile(filepath.Join(folder, k+".bin"), []byte(strings.Repeat(k, 10000*(i+1))), 0o644)
		if r := cache(t, "upload", "--store", s, "--key", k, "--workingdir", wd, "--folder", folder); r.code != 0 {
			t.Fatal(r)
		}
	}
	out := jsonLine(t, cache(t, "list", "--store", s, "--output", "json"))
	entries := out["entries"].([]any)
	if len(entries) != 3 {
		t.Fatalf("list: %v", out)
	}
	for _, e := range entries {
		m := e.(map[string]any)
		own, shared, stored := m["own-bytes"].(float64), m["shared-bytes"].(float64), m["stored-bytes"].(float64)
		if own+shared != stored || shared == 0 || m["files"].(float64) == 0 {
			t.Fatalf("entry %v: own %v + shared %v should be stored %v, with some shared and files counted", m["key"], own, shared, stored)
		}
	}
	if r := cache(t, "inspect", "--store", s, "go-3"); r.code != 0 || !strings.Contains(r.stdout, "largest files") || !strings.Contains(r.stdout, "go-3.bin") {
		t.Fatalf("inspect: %+v", r)
	}
	d := jsonLine(t, cache(t, "diff", "--store", s, "go-2", "go-3", "--output", "json"))
	if added := d["added"].([]any); len(added) != 1 || !strings.HasSuffix(added[0].(string), "go-3.bin") || d["download-packs"].(float64) < 1 {
		t.Fatalf("diff: %v", d)
	}
	if r := cache(t, "diff", "--store", s, "go-2"); r.code != 2 {
		t.Fatalf("diff with one key: %+v", r)
	}
	if r := cache(t, "prune", "--store", s); r.code != 2 || !strings.Contains(r.stderr, "no policy") {
		t.Fatalf("prune without a policy: %+v", r)
	}
	if r := cache(t, "prune", "--store", s, "--keep", "1", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would remove 2 entries") {
		t.Fatalf("dry run: %+v", r)
	}
	if got := jsonLine(t, cache(t, "list", "--store", s, "--output", "json"))["entries"].([]any); len(got) != 3 {
		t.Fatalf("a dry run removed entries: %d left", len(got))
	}
	p := jsonLine(t, cache(t, "prune", "--store", s, "--keep", "1", "--grace", "0", "--output", "json"))
	if kept := p["kept"].([]any); len(kept) != 1 || kept[0] != "go-3" || len(p["removed"].([]any)) != 2 || p["blobs-removed"].(float64) == 0 {
		t.Fatalf("prune: %v", p)
	}
	res := t.TempDir()
	if r := cache(t, "fetch", "--store", s, "--key", "go-3", "--folder", filepath.Join(t.TempDir(), "c"), "--results-dir", res); r.code != 0 || readResult(t, res, "status") != "hit" {
		t.Fatalf("the kept entry does not restore: %+v", r)
	}
}

// TestNoOpSaveReadsNothing: a second save of an unchanged folder with empty
// files says it read nothing (empty files were counted as read).
func TestNoOpSaveReadsNothing(t *testing.T) {
	wd, folder := workspace(t)
	os.WriteFile(filepath.Join(folder, "empty-1"), nil, 0o644)
	os.WriteFile(filepath.Join(folder, "empty-2"), nil, 0o644)
	s := fileStore(t)
	if r := cache(t, "upload", "--store", s, "--key", "go-1", "--workingdir", wd, "--folder", folder); r.code != 0 {
		t.Fatal(r)
	}
	r := cache(t, "upload", "--store", s, "--key", "go-2", "--workingdir", wd, "--folder", folder)
	if r.code != 0 || !strings.Contains(r.stderr, "), 0 read, ") || !strings.Contains(r.stderr, " empty") {
		t.Fatalf("no-op save: %+v", r)
	}
}

// TestPruneByLastUse: with --by-last-use, an old entry that cache-serve
// recorded as restored recently is the one --keep 1 keeps.
func TestPruneByLastUse(t *testing.T) {
	wd, folder := workspace(t)
	s := fileStore(t)
	for _, k := range []string{"go-1", "go-2"} {
		os.WriteFile(filepath.Join(folder, k), []byte(k), 0o644)
		if r := cache(t, "upload", "--store", s, "--key", k, "--workingdir", wd, "--folder", folder); r.code != 0 {
			t.Fatal(r)
		}
	}
	ctx := t.Context()
	opened, err := all.Mux().Open(ctx, s, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := store.As[store.MetaStore](opened)
	if err := gc.RecordUse(ctx, meta, "go-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	byCreated := jsonLine(t, cache(t, "prune", "--store", s, "--keep", "1", "--dry-run", "--output", "json"))
	if kept := byCreated["kept"].([]any); len(kept) != 1 || kept[0] != "go-2" {
		t.Fatalf("by created: kept %v, want go-2", kept)
	}
	byUse := jsonLine(t, cache(t, "prune", "--store", s, "--keep", "1", "--by-last-use", "--dry-run", "--output", "json"))
	if kept := byUse["kept"].([]any); len(kept) != 1 || kept[0] != "go-1" {
		t.Fatalf("by last use: kept %v, want go-1 (restored just now)", kept)
	}
}
