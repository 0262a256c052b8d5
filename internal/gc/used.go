package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// usedFormat is the version of a last-use record.
const usedFormat = 1

// UsedRecord is the name of the record (store.MetaStore) that says when
// the entry of key was last restored: "used-" and the hex sha256 of the
// key, so that any key maps to a valid record name of fixed length.
func UsedRecord(key string) string { return "used-" + digest.FromBytes([]byte(key)).Hex() }

// usedFile is the JSON of a last-use record. It holds the key, so that a
// record copied under another key's name is not taken for that key's.
type usedFile struct {
	Format int       `json:"format"`
	Key    string    `json:"key"`
	Used   time.Time `json:"used"`
}

// RecordUse records in meta that the entry of key was restored at t.
func RecordUse(ctx context.Context, meta store.MetaStore, key string, t time.Time) error {
	data, err := json.Marshal(usedFile{Format: usedFormat, Key: key, Used: t.UTC()})
	if err != nil {
		return err
	}
	if err := meta.PutMeta(ctx, UsedRecord(key), data); err != nil {
		return fmt.Errorf("recording the last use of %s: %w", key, err)
	}
	return nil
}

// ReadUses reads the last-use records of refs (8 at a time): the key of
// each ref that has a readable record, with when it was last restored. A
// record is untrusted: one that is undecodable, of another format or
// another key is ignored (the entry ranks by its Created), and a time
// after now counts as now. So a forged record can only move an entry in
// the eviction order, never change what a restore returns. A failure to
// read other than a missing record is returned: a GC that ranked by
// Created instead would evict what was used.
func ReadUses(ctx context.Context, meta store.MetaStore, refs []*store.Ref, now time.Time) (map[string]time.Time, error) {
	used := make([]time.Time, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, r := range refs {
		g.Go(func() error {
			data, err := meta.GetMeta(gctx, UsedRecord(r.Key))
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			var f usedFile
			if json.Unmarshal(data, &f) != nil || f.Format != usedFormat || f.Key != r.Key || f.Used.IsZero() {
				return nil
			}
			used[i] = f.Used
			if f.Used.After(now) {
				used[i] = now
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	m := map[string]time.Time{}
	for i, t := range used {
		if !t.IsZero() {
			m[refs[i].Key] = t
		}
	}
	return m, nil
}
