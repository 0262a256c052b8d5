// Package memory is an in-memory Bucket: the reference implementation of the
// store contracts, used by tests.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/store"
)

// Bucket keeps objects in a map.
type Bucket struct {
	name string
	mu   sync.RWMutex
	objs map[string]object
}

// object is an object's bytes and when they were put.
type object struct {
	data     []byte
	modified time.Time
}

var (
	_ store.Bucket     = (*Bucket)(nil)
	_ store.InfoLister = (*Bucket)(nil)
)

// New returns an empty bucket named name (for logs).
func New(name string) *Bucket { return &Bucket{name: name, objs: map[string]object{}} }

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
	o, ok := b.objs[name]
	b.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(o.data)), nil
}

// Stat implements store.Bucket.
func (b *Bucket) Stat(ctx context.Context, name string) (store.BlobInfo, error) {
	if err := ctx.Err(); err != nil {
		return store.BlobInfo{}, err
	}
	b.mu.RLock()
	o, ok := b.objs[name]
	b.mu.RUnlock()
	if !ok {
		return store.BlobInfo{}, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return store.BlobInfo{Size: int64(len(o.data)), Modified: o.modified}, nil
}

// Put implements store.Bucket.
func (b *Bucket) Put(ctx context.Context, name string, _ int64, r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, store.ContextReader(ctx, r)); err != nil {
		return err
	}
	b.mu.Lock()
	b.objs[name] = object{data: buf.Bytes(), modified: time.Now()}
	b.mu.Unlock()
	return nil
}

// List implements store.Bucket.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	objs, err := b.ListInfo(ctx, prefix)
	return store.Names(objs), err
}

// ListInfo implements store.InfoLister, in name order.
func (b *Bucket) ListInfo(ctx context.Context, prefix string) ([]store.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	var objs []store.ObjectInfo
	for k, o := range b.objs {
		if strings.HasPrefix(k, prefix) {
			objs = append(objs, store.ObjectInfo{Name: k, Size: int64(len(o.data)), Modified: o.modified})
		}
	}
	slices.SortFunc(objs, func(a, b store.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	return objs, nil
}

// Delete implements store.Bucket.
func (b *Bucket) Delete(_ context.Context, name string) error {
	b.mu.Lock()
	delete(b.objs, name)
	b.mu.Unlock()
	return nil
}
