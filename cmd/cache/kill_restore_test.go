package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/engine"
	"github.com/tekton-cache/tekton-cache/internal/faultproxy"
	"github.com/tekton-cache/tekton-cache/internal/store"
	"github.com/tekton-cache/tekton-cache/internal/store/all"
	"github.com/tekton-cache/tekton-cache/internal/testserver"
	"github.com/tekton-cache/tekton-cache/internal/testtree"
)

// TestRestoreKilledMidwayLeavesNoTempFiles kills a real `cache fetch`
// (SIGKILL) while it has temporary files in the folder, then fetches again:
// no temporary file is left anywhere, and the folder holds the entry. To
// kill it at a known point, the store is a real registry behind the fault
// proxy, which stalls the download of one pack: the restore blocks there
// after writing the other packs' files.
func TestRestoreKilledMidwayLeavesNoTempFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a registry")
	}
	bin, url, dst, proxy, want := stalledRestore(t)
	cmd, out := startBlockedFetch(t, bin, url, dst, proxy)
	cmd.Process.Kill()
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the restore finished while a pack could not be read:\n%s", out.String())
	}
	left := temps(dst)
	if len(left) == 0 {
		t.Fatalf("the killed restore left no temporary file: the test would prove nothing\n%s", out.String())
	}
	t.Logf("the killed restore left %d temporary files", len(left))

	// The store answers again; the next fetch cleans up and restores.
	proxy.Clear()
	if b, err := exec.Command(bin, "fetch", "--source", url, "--insecure", "--folder", dst, "--strict").CombinedOutput(); err != nil {
		t.Fatalf("fetch after the killed one: %v\n%s", err, b)
	}
	if left := temps(dst); len(left) > 0 {
		t.Fatalf("%d temporary files of the killed restore are still there after a fetch, e.g. %s", len(left), left[0])
	}
	testtree.Equal(t, want, testtree.Snapshot(t, dst, archive.StateFileName))
}

// stalledRestore sets up a fetch that blocks: an entry of several packs in
// a real registry behind the fault proxy, which stalls every download of
// the last pack, and a folder that holds older versions of the entry's
// files (so the restore stages its files and moves them at the end). It
// returns the binary, the fetch's --source, the folder and the entry's
// files.
func stalledRestore(t *testing.T) (bin, url, dst string, proxy *faultproxy.Proxy, want map[string]testtree.Entry) {
	t.Helper()
	bin = buildCache(t)
	proxy = faultproxy.New(t, "http://"+testserver.Registry(t, "", ""))
	url = "oci://" + proxy.Addr() + "/cache:k"
	ctx := context.Background()
	st, err := all.Mux().Open(ctx, "oci://"+proxy.Addr()+"/cache", store.Options{Insecure: true})
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
	want = testtree.Snapshot(t, src)
	if _, err := engine.Save(ctx, st, engine.SaveOptions{Key: "k", Folders: []string{src}, PackSize: 100 << 10}); err != nil {
		t.Fatal(err)
	}
	ref, err := st.GetRef(ctx, "k")
	if err != nil || len(ref.Packs) < 3 {
		t.Fatalf("want several packs: %v, %v", ref, err)
	}
	// The folder holds other versions of the files: the restore stages
	// its files and moves them into place at the end.
	dst = filepath.Join(t.TempDir(), "cache")
	for i := range 24 {
		p := filepath.Join(dst, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("an older version\n"), 0o644)
	}
	proxy.Add(faultproxy.Rule{Method: http.MethodGet, Path: "/blobs/" + ref.Packs[len(ref.Packs)-1].Digest.String() + "$", Fault: faultproxy.Stall, Times: -1})

	return bin, url, dst, proxy, want
}

// startBlockedFetch starts `cache fetch` on stalledRestore's entry and
// returns once it blocks on the stalled pack with the other packs' files
// in place (temporary files in dst).
func startBlockedFetch(t *testing.T, bin, url, dst string, proxy *faultproxy.Proxy, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"fetch", "--source", url, "--insecure", "--folder", dst, "--jobs", "8"}, extra...)...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(temps(dst)) == 0 || proxy.Faults() == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no temporary file and stalled download within 60 s:\n%s", out.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the other packs land
	return cmd, out
}

func temps(dir string) []string { return testtree.WithPrefix(dir, archive.TempPrefix) }
