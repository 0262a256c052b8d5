package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// TimesTag is the tag of the repository's times manifest: a hint of when
// each entry was saved, so that a restore key reads the newest entries
// first instead of every entry's manifest (store.RefLister). It is a valid
// key, reserved: the store refuses to get or put an entry under it, and
// leaves it out of its listings.
const TimesTag = "_tekton-cache.times"

// Media type and annotation of the times manifest (docs/OCI.md).
const (
	// TimesArtifactType is the artifact type of the times manifest.
	TimesArtifactType = "application/vnd.tekton-cache.times.v1+json"
	// AnnotationTimes holds the times: a JSON object from each key to its
	// entry's Created (RFC 3339, nanoseconds).
	AnnotationTimes = "dev.tekton-cache.times"
	// emptyMediaType is the OCI empty descriptor's media type: the times
	// manifest's config and only layer are the two-byte blob "{}".
	emptyMediaType = "application/vnd.oci.empty.v1+json"
)

// timesTries bounds the read-modify-write of the times manifest per save.
const timesTries = 3

// timesRepairs bounds the keys without a time a save reads to add them.
const timesRepairs = 8

var emptyJSON = []byte("{}")

var _ store.RefLister = (*Store)(nil)

// errReserved is the error of an entry asked for under TimesTag.
func (s *Store) errReserved(op string) error {
	return fmt.Errorf("%s: %s %q: %w: the oci store reserves this tag for its times manifest", s, op, TimesTag, store.ErrInvalidKey)
}

// ListRefInfo implements store.RefLister: the tags (one listing, paged by
// the registry) and the times manifest (one GET), in parallel. Modified is
// the Created the entry's save recorded in the times manifest, zero for a
// key it lacks (a save that lost a race to update it, an older version's):
// those are read whole by store.Candidates.
func (s *Store) ListRefInfo(ctx context.Context, prefix string) ([]store.RefInfo, error) {
	var keys []string
	var times map[string]time.Time
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		keys, err = s.ListRefs(gctx, prefix)
		return err
	})
	g.Go(func() (err error) {
		times, _, err = s.getTimes(gctx)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	infos := make([]store.RefInfo, len(keys))
	for i, k := range keys {
		infos[i] = store.RefInfo{Key: k, Modified: times[k]}
	}
	return infos, nil
}

// getTimes reads the times manifest: none, or one that is not ours, is an
// empty map. ours says whether the tag holds our times manifest (so the
// empty blob it names is in the repository).
func (s *Store) getTimes(ctx context.Context) (times map[string]time.Time, ours bool, err error) {
	desc, err := s.puller.Get(ctx, s.repo.Tag(TimesTag))
	if err != nil {
		if err = s.fail("get times", err); errors.Is(err, store.ErrNotFound) {
			return map[string]time.Time{}, false, nil
		}
		return nil, false, err
	}
	times, err = decodeTimes(desc.Manifest)
	if err != nil {
		s.logf("%s: the times manifest %s is not ours (%v): restore keys read every entry until a save replaces it", s, TimesTag, err)
		return map[string]time.Time{}, false, nil
	}
	return times, true, nil
}

// decodeTimes parses a times manifest.
func decodeTimes(raw []byte) (map[string]time.Time, error) {
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	if m.ArtifactType != TimesArtifactType {
		return nil, fmt.Errorf("artifact type %q, want %s", m.ArtifactType, TimesArtifactType)
	}
	var stamps map[string]string
	if err := json.Unmarshal([]byte(m.Annotations[AnnotationTimes]), &stamps); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationTimes, err)
	}
	times := make(map[string]time.Time, len(stamps))
	for k, v := range stamps {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && store.ValidateKey(k) == nil {
			times[k] = t
		}
	}
	return times, nil
}

// encodeTimes returns the times manifest holding times.
func encodeTimes(times map[string]time.Time) ([]byte, error) {
	stamps := make(map[string]string, len(times))
	for k, t := range times {
		stamps[k] = t.UTC().Format(time.RFC3339Nano)
	}
	ann, err := json.Marshal(stamps)
	if err != nil {
		return nil, err
	}
	empty := descriptor{MediaType: emptyMediaType, Digest: digest.FromBytes(emptyJSON).String(), Size: int64(len(emptyJSON))}
	return json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     ManifestMediaType,
		ArtifactType:  TimesArtifactType,
		Config:        &empty,
		Layers:        []descriptor{empty},
		Annotations:   map[string]string{AnnotationTimes: string(ann)},
	})
}

// setTime records (t non-zero) or removes (t zero) key's time in the times
// manifest: read, modify, write, then read again to see that no concurrent
// save wrote over it, up to timesTries times. A registry has no
// conditional PUT, so a save may still lose a race: its key then lacks a
// time (it is read whole) or keeps an older one (until it is saved again).
// It is a hint: a failure is logged, never returned.
func (s *Store) setTime(ctx context.Context, key string, t time.Time) {
	var err error
	for try := range timesTries {
		var done bool
		if done, err = s.trySetTime(ctx, key, t, try == 0 && !t.IsZero()); done || err != nil {
			break
		}
	}
	if err != nil {
		s.logf("warning: %v (a hint only: restore keys read this entry whole)", err)
	}
}

// trySetTime is one read-modify-write of setTime; done says the times
// manifest already said what was asked. repair has it also mend what lost
// races left (repairTimes).
func (s *Store) trySetTime(ctx context.Context, key string, t time.Time, repair bool) (done bool, err error) {
	times, ours, err := s.getTimes(ctx)
	if err != nil {
		return false, err
	}
	got, ok := times[key]
	if ok == !t.IsZero() && got.Equal(t) && !repair {
		return true, nil
	}
	if repair {
		if err := s.repairTimes(ctx, times, key); err != nil {
			return false, err
		}
	}
	if t.IsZero() {
		delete(times, key)
	} else {
		times[key] = t
	}
	if !ours {
		d := digest.FromBytes(emptyJSON)
		if err := s.PutBlob(ctx, d, int64(len(emptyJSON)), strings.NewReader(string(emptyJSON))); err != nil {
			return false, err
		}
	}
	raw, err := encodeTimes(times)
	if err != nil {
		return false, err
	}
	if err := s.pusher.Load().Put(ctx, s.repo.Tag(TimesTag), rawManifest(raw)); err != nil {
		return false, s.fail("put times", err)
	}
	return false, nil // read again to check
}

// repairTimes mends times, read before: it drops the keys whose tag is gone
// and adds the Created of up to timesRepairs tags it lacks, picked at random (a save that
// lost a race, an entry saved by an older version), other than skip. A
// key's tag is pushed before its time, so a key in times whose tag the
// listing (made after times was read) lacks was deleted.
func (s *Store) repairTimes(ctx context.Context, times map[string]time.Time, skip string) error {
	keys, err := s.ListRefs(ctx, "")
	if err != nil {
		return err
	}
	tagged := make(map[string]bool, len(keys))
	var missing []string
	for _, k := range keys {
		tagged[k] = true
		if _, ok := times[k]; !ok && k != skip {
			missing = append(missing, k)
		}
	}
	// A random few: another tool's tags never get a time, and must not
	// hide ours from every save.
	rand.Shuffle(len(missing), func(i, j int) { missing[i], missing[j] = missing[j], missing[i] })
	missing = missing[:min(len(missing), timesRepairs)]
	for k := range times {
		if !tagged[k] && k != skip {
			delete(times, k)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	found := make([]time.Time, len(missing))
	for i, k := range missing {
		g.Go(func() error {
			ref, err := s.GetRef(gctx, k)
			if errors.Is(err, store.ErrNotFound) {
				return nil // deleted since, or not an entry
			}
			if err == nil {
				found[i] = ref.Created
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, k := range missing {
		if !found[i].IsZero() {
			times[k] = found[i]
		}
	}
	return nil
}
