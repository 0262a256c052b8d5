package main

import (
	"crypto/sha1"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestScaleCopies(t *testing.T) {
	for _, tc := range []struct {
		name           string
		gb, gf, nb, nf int64
	}{
		{"the corpora of this machine", 1_464_000_000, 28_090, 195_000_000, 38_944},
		{"only big files", 1_000_000_000, 10, 500_000_000, 5},
		{"only small files", 1_000_000, 100_000, 2_000_000, 200_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, n := scaleCopies(tc.gb, tc.gf, tc.nb, tc.nf)
			if bytes, files := g*tc.gb+n*tc.nb, g*tc.gf+n*tc.nf; bytes < scaleBytes || files < scaleFiles {
				t.Fatalf("%d go and %d node copies: %d bytes, %d files; want at least %d and %d", g, n, bytes, files, scaleBytes, scaleFiles)
			}
			// One copy fewer of either misses a target.
			for _, c := range [][2]int64{{g - 1, n}, {g, n - 1}} {
				if c[0] < 0 || c[1] < 0 {
					continue
				}
				if c[0]*tc.gb+c[1]*tc.nb >= scaleBytes && c[0]*tc.gf+c[1]*tc.nf >= scaleFiles {
					t.Errorf("%d go and %d node copies are enough, got %d and %d", c[0], c[1], g, n)
				}
			}
		})
	}
}

func TestCopyVaried(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	must(t, os.MkdirAll(filepath.Join(src, "a", "b"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("hello"), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "empty"), nil, 0o600))
	must(t, os.WriteFile(filepath.Join(src, ".tekton-cache-state"), []byte("state"), 0o600))
	must(t, os.Symlink("a/b/f", filepath.Join(src, "link")))
	must(t, os.Chtimes(filepath.Join(src, "a", "b", "f"), mtime, mtime))
	must(t, os.Chtimes(filepath.Join(src, "a"), mtime, mtime))

	must(t, copyVaried(src, dst, 3))

	got, err := os.ReadFile(filepath.Join(dst, "a", "b", "f"))
	must(t, err)
	if want := "hell" + string('o'^3); string(got) != want {
		t.Errorf("copied file holds %q, want %q", got, want)
	}
	for _, p := range []string{"a/b/f", "a"} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		must(t, err)
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), mtime)
		}
	}
	fi, err := os.Lstat(filepath.Join(dst, "a", "b", "f"))
	must(t, err)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if n := fi.Sys().(*syscall.Stat_t).Nlink; n != 1 {
		t.Errorf("the copy has %d links: a hard link, not a copy", n)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "empty")); err != nil || fi.Size() != 0 {
		t.Errorf("empty file: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "a/b/f" {
		t.Errorf("link: %q, %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, ".tekton-cache-state")); !os.IsNotExist(err) {
		t.Errorf("the restore state was copied: %v", err)
	}
}

func TestAddMavenFiles(t *testing.T) {
	repo := t.TempDir()
	v := filepath.Join(repo, "org", "example", "lib", "1.2")
	must(t, os.MkdirAll(v, 0o755))
	must(t, os.MkdirAll(filepath.Join(repo, "org", "example", "lib", "1.10"), 0o755))
	must(t, os.WriteFile(filepath.Join(v, "lib-1.2.jar"), []byte("jar"), 0o644))
	must(t, os.WriteFile(filepath.Join(v, "lib-1.2.pom"), []byte("<project/>"), 0o644))
	must(t, os.WriteFile(filepath.Join(repo, "org", "example", "lib", "1.10", "lib-1.10.pom"), []byte("<project/>"), 0o644))

	must(t, addMavenFiles(repo))

	sum := sha1.Sum([]byte("jar"))
	if got, err := os.ReadFile(filepath.Join(v, "lib-1.2.jar.sha1")); err != nil || string(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("jar's .sha1: %q, %v", got, err)
	}
	remote, err := os.ReadFile(filepath.Join(v, "_remote.repositories"))
	must(t, err)
	for _, want := range []string{"lib-1.2.jar>central=\n", "lib-1.2.pom>central=\n"} {
		if !strings.Contains(string(remote), want) {
			t.Errorf("_remote.repositories lacks %q:\n%s", want, remote)
		}
	}
	meta, err := os.ReadFile(filepath.Join(repo, "org", "example", "lib", "maven-metadata-central.xml"))
	must(t, err)
	for _, want := range []string{"<groupId>org.example</groupId>", "<artifactId>lib</artifactId>", "<version>1.10</version>", "<version>1.2</version>"} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("maven-metadata-central.xml lacks %q:\n%s", want, meta)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
