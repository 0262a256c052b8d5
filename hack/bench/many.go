package main

// The many corpus: peak RSS at 600,000 entries without 10 GB.

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The many corpus' shape: manyLibs x manyMods leaf directories of
// manyFiles files each (597,000 files and 3,201 directories: 600,201
// entries with the folder's own).
const (
	manyLibs  = 100
	manyMods  = 30
	manyFiles = 199
)

// manyWords make the file names, so that paths look like a JavaScript or
// Java tree's and are about 70 characters long.
var manyWords = []string{"component", "registry", "handler", "resolver", "transform", "adapter", "provider", "factory", "serializer", "middleware", "dispatcher", "validator"}

// manyPath is the path (relative to the folder) of file j of leaf
// directory (lib, mod).
func manyPath(lib, mod, j int) string {
	w1, w2 := manyWords[(lib+j)%len(manyWords)], manyWords[(mod*7+j)%len(manyWords)]
	return fmt.Sprintf("lib-%03d/src/mod-%02d/%s-%s-%04d.generated.spec.ts", lib, mod, w1, w2, j)
}

// manyContent is the content of the file at p, number n: 0 to 2 KiB
// (n*7919 mod 2049 bytes) of source text, starting with its path so that
// no two files share a digest. The same p and n always give the same bytes.
func manyContent(text []byte, p string, n int) []byte {
	size := (n * 7919) % 2049
	b := make([]byte, 0, size)
	b = append(b, "// "+p+"\n"...)
	off := (n * 4099) % (len(text) - 4096)
	b = append(b, text[off:off+size]...)
	return b[:size]
}

// manyCorpus returns root/tree: about 600,000 entries of tiny files in a
// few thousand directories (see the constants above), built once.
func manyCorpus(root string) []string {
	tree := filepath.Join(root, "tree")
	stamp := fmt.Sprintf("many %d x %d x %d\n", manyLibs, manyMods, manyFiles)
	if done, err := os.ReadFile(filepath.Join(root, ".done")); err == nil && string(done) == stamp {
		return []string{tree}
	}
	log.Printf("building the many corpus (%d files of 0-2 KiB in %d directories) ...", manyLibs*manyMods*manyFiles, manyLibs*manyMods)
	start := time.Now()
	os.RemoveAll(root)
	text := textChunk()
	var wg sync.WaitGroup
	errs := make([]error, manyLibs)
	sem := make(chan struct{}, 4)
	for lib := range manyLibs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			for mod := range manyMods {
				d := filepath.Join(tree, fmt.Sprintf("lib-%03d/src/mod-%02d", lib, mod))
				if err := os.MkdirAll(d, 0o755); err != nil {
					errs[lib] = err
					return
				}
				for j := range manyFiles {
					p := manyPath(lib, mod, j)
					n := (lib*manyMods+mod)*manyFiles + j
					if err := os.WriteFile(filepath.Join(tree, p), manyContent(text, p, n), 0o644); err != nil {
						errs[lib] = err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		check(err)
	}
	check(os.WriteFile(filepath.Join(root, ".done"), []byte(stamp), 0o644))
	b, f := treeSize(tree)
	log.Printf("many corpus built in %.0f s: %.2f MB, %d files", time.Since(start).Seconds(), float64(b)/1e6, f)
	settle()
	return []string{tree}
}
