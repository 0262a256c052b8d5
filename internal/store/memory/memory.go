// Package memory is an in-memory Bucket: the reference implementation of the
// store contracts, used by tests and by `mem://` URLs.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Bucket keeps objects in a map.
type Bucket struct {
	name string
	mu   sync.RWMutex
	objs map[string][]byte
}

var _ store.Bucket = (*Bucket)(nil)

// New returns an empty bucket named name (for logs).
func New(name string) *Bucket { return &Bucket{name: name, objs: map[string][]byte{}} }

// NewStore returns a Store over a new empty bucket.
func NewStore(name string) *store.ObjectStore { return store.NewObjectStore(New(name)) }

// String implements store.Bucket.
func (b *Bucket) String() string { return "mem://" + b.name }

// Get implements store.Bucket.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	data, ok := b.objs[name]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Stat implements store.Bucket.
func (b *Bucket) Stat(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.RLock()
	data, ok := b.objs[name]
	b.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return int64(len(data)), nil
}

// Put implements store.Bucket.
func (b *Bucket) Put(ctx context.Context, name string, _ int64, r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, store.ContextReader(ctx, r)); err != nil {
		return err
	}
	b.mu.Lock()
	b.objs[name] = buf.Bytes()
	b.mu.Unlock()
	return nil
}

// List implements store.Bucket.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	var names []string
	for k := range b.objs {
		if strings.HasPrefix(k, prefix) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names, nil
}

// Delete implements store.Bucket.
func (b *Bucket) Delete(_ context.Context, name string) error {
	b.mu.Lock()
	delete(b.objs, name)
	b.mu.Unlock()
	return nil
}
