package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/local"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestRestoreKilledMidwayLeavesNoTempFiles kills a real `cache fetch`
// (SIGKILL) while it has temporary files in the folder, then fetches again:
// no temporary file is left anywhere, and the folder holds the entry. To
// kill it at a known point, one pack blob of the file:// store is a FIFO:
// the restore blocks opening it after writing the other packs' files.
func TestRestoreKilledMidwayLeavesNoTempFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildCache(t)
	storeDir := filepath.Join(t.TempDir(), "store")
	st, err := local.Open(context.Background(), &url.URL{Scheme: "file", Path: storeDir}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "cache")
	data := make([]byte, 40<<10)
	for i := range 24 {
		rand.Read(data)
		p := filepath.Join(src, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, data, 0o644)
	}
	testtree.Touch(t, src, testtree.Old)
	want := testtree.Snapshot(t, src)
	if _, err := engine.Save(context.Background(), st, engine.SaveOptions{Key: "k", Folders: []string{src}, PackSize: 100 << 10}); err != nil {
		t.Fatal(err)
	}
	ref, err := st.GetRef(context.Background(), "k")
	if err != nil || len(ref.Packs) < 3 {
		t.Fatalf("want several packs: %v, %v", ref, err)
	}
	// The folder holds other versions of the files: the restore writes
	// temporary files next to them.
	dst := filepath.Join(t.TempDir(), "cache")
	for i := range 24 {
		p := filepath.Join(dst, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("an older version\n"), 0o644)
	}
	blocked := filepath.Join(storeDir, filepath.FromSlash(store.BlobName(ref.Packs[len(ref.Packs)-1].Digest)))
	saved, err := os.ReadFile(blocked)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(blocked)
	if err := unix.Mkfifo(blocked, 0o644); err != nil {
		t.Skipf("no FIFO: %v", err)
	}

	cmd := exec.Command(bin, "fetch", "--store", "file://"+storeDir, "--key", "k", "--folder", dst, "--jobs", "8")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(temps(dst)) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no temporary file within 60 s:\n%s", out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the other packs land
	cmd.Process.Kill()
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the restore finished while a pack could not be read:\n%s", out.String())
	}
	left := temps(dst)
	t.Logf("the killed restore left %d temporary files", len(left))

	// The store is whole again; the next fetch cleans up and restores.
	os.Remove(blocked)
	if err := os.WriteFile(blocked, saved, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bin, "fetch", "--store", "file://"+storeDir, "--key", "k", "--folder", dst, "--strict").CombinedOutput(); err != nil {
		t.Fatalf("fetch after the killed one: %v\n%s", err, b)
	}
	if left := temps(dst); len(left) > 0 {
		t.Fatalf("%d temporary files of the killed restore are still there after a fetch, e.g. %s", len(left), left[0])
	}
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
}

func temps(dir string) []string { return testtree.WithPrefix(dir, archive.TempPrefix) }
