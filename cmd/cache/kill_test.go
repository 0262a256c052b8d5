package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestSaveKilledMidwayLeavesPreviousEntry kills a real `cache upload`
// process (SIGKILL, no chance to clean up) once it has written some packs,
// then checks that the key it was saving does not exist and that the
// previous entry restores intact: the ref is published last.
func TestSaveKilledMidwayLeavesPreviousEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildCache(t)
	storeDir := filepath.Join(t.TempDir(), "store")
	storeURL := "file://" + storeDir
	src := filepath.Join(t.TempDir(), "cache")
	os.MkdirAll(src, 0o755)
	testtree.Make(t, src)
	want := testtree.Snapshot(t, src)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("cache %v: %v\n%s", args, err, out)
		}
	}
	run("upload", "--store", storeURL, "--key", "go-1", "--folder", src, "--strict")

	// A second, large save: 400 MiB of random data, 13 packs or so.
	big := make([]byte, 1<<20)
	os.MkdirAll(filepath.Join(src, "big"), 0o755)
	for i := range 400 {
		rand.Read(big)
		os.WriteFile(filepath.Join(src, "big", fmt.Sprintf("f%03d", i)), big, 0o644)
	}
	cmd := exec.Command(bin, "upload", "--store", storeURL, "--key", "go-2", "--folder", src, "--force", "--jobs", "1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(storeDir, "v1", "blobs", "sha256")
	before, _ := os.ReadDir(blobs)
	deadline := time.Now().Add(60 * time.Second)
	for {
		now, _ := os.ReadDir(blobs)
		if len(now) > len(before) {
			break // a pack of the new save landed: kill it mid-way
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no new pack within 60 s:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	err := cmd.Wait()
	if err == nil || strings.Contains(out.String(), "saved go-2") {
		t.Fatalf("the save finished before it could be killed (400 MiB with --jobs 1 should take seconds): %s", out.String())
	}
	if _, err := os.Stat(filepath.Join(storeDir, "v1", "refs", "go-2")); !os.IsNotExist(err) {
		t.Fatalf("the killed save published its ref: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	run("fetch", "--store", storeURL, "--key", "go-2", "--restore-keys", "go-", "--folder", dst, "--strict")
	testtree.Equal(t, want, testtree.Snapshot(t, dst, ".tekton-cache-state"))
}

// buildCache builds the binary into a temporary directory.
func buildCache(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cache")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
