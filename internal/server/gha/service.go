package gha

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// The errors of the entry service, which each front end words in its
// protocol's terms.
var (
	// ErrExists: the key and version are saved, or being saved, in the scope.
	ErrExists = errors.New("cache entry already exists")
	// ErrNoUpload: no such reservation (never made, finished or expired).
	ErrNoUpload = errors.New("no such upload")
	// ErrTooLarge: over the server's largest entry.
	ErrTooLarge = errors.New("cache entry too large")
	// ErrInvalid: a request that cannot be right (a bad range, a size
	// that is not what was uploaded, a key too long).
	ErrInvalid = errors.New("invalid request")
)

// MaxKeyLen is the longest key (GitHub's limit).
const MaxKeyLen = 512

// maxVersionLen bounds a version string (a hex sha256 in both clients).
const maxVersionLen = 512

// maxRecord bounds a record blob read back.
const maxRecord = 64 << 10

// DefaultReservationTTL is how long an unfinished upload keeps its key
// reserved, and its parts, unless ServiceOptions.ReservationTTL says
// otherwise.
const DefaultReservationTTL = time.Hour

// toolName is the Tool of the refs this package writes.
const toolName = "cache-serve/gha"

// record is the JSON of a record blob: the index of an entry's ref (kind
// "entry") or of an upload's and its reservation's (kind "upload").
type record struct {
	Format  int                `json:"format"`
	Kind    string             `json:"kind"`
	Scope   string             `json:"scope"`
	Key     string             `json:"key"`
	Version string             `json:"version"`
	Upload  int64              `json:"upload,omitempty"`
	Archive *format.Descriptor `json:"archive,omitempty"`
	Created time.Time          `json:"created"`
}

const recordFormat = 1

// ServiceOptions configure a Service.
type ServiceOptions struct {
	// MaxSize is the largest archive (0: no limit).
	MaxSize int64
	// ReservationTTL: see DefaultReservationTTL (0: that).
	ReservationTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logf receives warnings; nil is silent.
	Logf func(format string, args ...any)
}

// Service is the entry service both front ends share: lookups by keys
// and version in an ordered list of scopes, reservations, parts, commits.
type Service struct {
	st  store.Store
	del store.Deleter
	o   ServiceOptions

	// mu makes the check and write of a reservation one step within this
	// replica (a read-back catches most races between replicas).
	mu sync.Mutex

	recMu   sync.Mutex
	records map[digest.Digest]*record // immutable by their digest
}

// NewService returns the entry service over st, which must be able to
// delete (the parts of finished uploads).
func NewService(st store.Store, o ServiceOptions) (*Service, error) {
	del, ok := store.As[store.Deleter](st)
	if !ok {
		return nil, fmt.Errorf("%s cannot delete, which the GitHub Actions cache needs (finished uploads' parts): use --gha=false", st)
	}
	if o.ReservationTTL <= 0 {
		o.ReservationTTL = DefaultReservationTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return &Service{st: st, del: del, o: o, records: map[digest.Digest]*record{}}, nil
}

// Entry is a committed entry found by Lookup.
type Entry struct {
	Scope, Key, Version string
	Archive             format.Descriptor
	Created             time.Time
	// Ref is its backing key (for the last-use record of a download).
	Ref string
}

func checkKeyVersion(key, version string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: an empty key", ErrInvalid)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: a key of %d characters (at most %d)", ErrInvalid, len(key), MaxKeyLen)
	case version == "":
		return fmt.Errorf("%w: no version", ErrInvalid)
	case len(version) > maxVersionLen:
		return fmt.Errorf("%w: a version of %d characters (at most %d)", ErrInvalid, len(version), maxVersionLen)
	}
	return nil
}

// Lookup finds the entry of version for the first key that has one, in
// the first scope of read that does, as GitHub does: per scope, per key,
// the exact key first, then the newest entry whose key starts with it.
// None gives (nil, nil).
func (s *Service) Lookup(ctx context.Context, read, keys []string, version string) (*Entry, error) {
	for _, k := range keys {
		if err := checkKeyVersion(k, version); err != nil {
			return nil, err
		}
	}
	for _, scope := range read {
		for _, k := range keys {
			e, err := s.exact(ctx, scope, k, version)
			if e != nil || err != nil {
				return e, err
			}
			if e, err = s.newest(ctx, scope, k, version); e != nil || err != nil {
				return e, err
			}
		}
	}
	return nil, nil
}

// entryOf is the entry ref r stands for, when its record says it is
// (scope, version) and its key passes match; else nil.
func (s *Service) entryOf(ctx context.Context, r *store.Ref, scope, version string, match func(string) bool) (*Entry, error) {
	if len(r.Packs) != 1 {
		return nil, nil
	}
	rec, err := s.record(ctx, r.Index)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, digest.ErrMismatch) || errors.Is(err, errBadRecord) {
		return nil, nil // evicted under us, or not ours: not an entry
	}
	if err != nil {
		return nil, err
	}
	if rec.Kind != "entry" || rec.Scope != scope || rec.Version != version || !match(rec.Key) || rec.Archive == nil || *rec.Archive != r.Packs[0] {
		return nil, nil
	}
	return &Entry{Scope: scope, Key: rec.Key, Version: version, Archive: r.Packs[0], Created: r.Created, Ref: r.Key}, nil
}

func (s *Service) exact(ctx context.Context, scope, key, version string) (*Entry, error) {
	r, err := s.st.GetRef(ctx, nameKey(entryNS, scope, version, key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.entryOf(ctx, r, scope, version, func(k string) bool { return k == key })
}

func (s *Service) newest(ctx context.Context, scope, prefix, version string) (*Entry, error) {
	for r, err := range store.Candidates(ctx, s.st, namePrefix(entryNS, scope, version, prefix)) {
		if errors.Is(err, store.ErrDamagedRef) {
			s.o.Logf("warning: gha: %v", err)
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		e, err := s.entryOf(ctx, r, scope, version, func(k string) bool { return strings.HasPrefix(k, prefix) })
		if e != nil || err != nil {
			return e, err
		}
	}
	return nil, nil
}

var errBadRecord = errors.New("not a record of this front end")

// record reads the record blob d (kept in memory by its digest).
func (s *Service) record(ctx context.Context, d format.Descriptor) (*record, error) {
	s.recMu.Lock()
	rec := s.records[d.Digest]
	s.recMu.Unlock()
	if rec != nil {
		return rec, nil
	}
	if d.Size > maxRecord {
		return nil, errBadRecord
	}
	rc, err := s.st.GetBlob(ctx, d.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(digest.NewVerifier(io.LimitReader(rc, d.Size+1), d.Digest, d.Size))
	if err != nil {
		return nil, err
	}
	rec = &record{}
	if json.Unmarshal(data, rec) != nil || rec.Format != recordFormat {
		return nil, errBadRecord
	}
	s.recMu.Lock()
	if len(s.records) >= 10_000 {
		clear(s.records)
	}
	s.records[d.Digest] = rec
	s.recMu.Unlock()
	return rec, nil
}

func (s *Service) putRecord(ctx context.Context, rec *record) (format.Descriptor, error) {
	rec.Format = recordFormat
	data, err := json.Marshal(rec)
	if err != nil {
		return format.Descriptor{}, err
	}
	d := format.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	return d, s.st.PutBlob(ctx, d.Digest, d.Size, bytes.NewReader(data))
}

func (s *Service) putRef(ctx context.Context, key string, index format.Descriptor, packs []format.Descriptor, created time.Time) error {
	return s.st.PutRef(ctx, &store.Ref{Format: format.Version, Key: key, Index: index, Packs: packs, Created: created.UTC(), Tool: toolName})
}

// upload is a reservation being uploaded.
type upload struct {
	id      int64
	rec     *record
	recDesc format.Descriptor
	ref     *store.Ref
}

func (u *upload) expired(now time.Time, ttl time.Duration) bool { return now.Sub(u.ref.Created) > ttl }

// newID is a random upload id, positive and below 2^53 (a JavaScript
// number holds it exactly; clients refuse 0).
func newID() int64 {
	var b [8]byte
	rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>11) | 1
}

// Reserve reserves (key, version) in scope for an upload: ErrExists when
// it is saved there, or being saved (an unexpired reservation).
func (s *Service) Reserve(ctx context.Context, scope, key, version string) (int64, error) {
	if err := checkKeyVersion(key, version); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, err := s.exact(ctx, scope, key, version); err != nil || e != nil {
		return 0, cmp.Or(err, fmt.Errorf("%w. Scope: %s, Key: %s, Version: %s", ErrExists, scope, key, version))
	}
	rk := nameKey(reserveNS, scope, version, key)
	now := s.o.Now()
	if u, err := s.reservation(ctx, rk); err != nil {
		return 0, err
	} else if u != nil && !u.expired(now, s.o.ReservationTTL) {
		return 0, fmt.Errorf("%w (being saved). Scope: %s, Key: %s, Version: %s", ErrExists, scope, key, version)
	}
	id := newID()
	rec := &record{Kind: "upload", Scope: scope, Key: key, Version: version, Upload: id, Created: now.UTC()}
	rd, err := s.putRecord(ctx, rec)
	if err != nil {
		return 0, err
	}
	if err := s.putRef(ctx, uploadKey(id), rd, nil, now); err != nil {
		return 0, err
	}
	if err := s.putRef(ctx, rk, rd, nil, now); err != nil {
		return 0, err
	}
	// Read back: a replica that wrote the same reservation meanwhile wins
	// if its write landed last; this one then gives up its upload.
	if r, err := s.st.GetRef(ctx, rk); err != nil || r.Index != rd {
		s.dropRef(ctx, uploadKey(id))
		return 0, cmp.Or(err, fmt.Errorf("%w (being saved). Scope: %s, Key: %s, Version: %s", ErrExists, scope, key, version))
	}
	return id, nil
}

// reservation is the upload the reservation ref rk names, or nil.
func (s *Service) reservation(ctx context.Context, rk string) (*upload, error) {
	r, err := s.st.GetRef(ctx, rk)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rec, err := s.record(ctx, r.Index)
	if err != nil || rec.Kind != "upload" {
		return nil, nil // gone or unreadable: no reservation that holds
	}
	return &upload{id: rec.Upload, rec: rec, recDesc: r.Index, ref: r}, nil
}

// loadUpload is upload id, which scope (unless "") must own: ErrNoUpload
// when there is none (or it expired).
func (s *Service) loadUpload(ctx context.Context, id int64, scope string) (*upload, error) {
	r, err := s.st.GetRef(ctx, uploadKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w %d", ErrNoUpload, id)
	}
	if err != nil {
		return nil, err
	}
	rec, err := s.record(ctx, r.Index)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, errBadRecord) || errors.Is(err, digest.ErrMismatch) {
		return nil, fmt.Errorf("%w %d", ErrNoUpload, id)
	}
	if err != nil {
		return nil, err
	}
	u := &upload{id: id, rec: rec, recDesc: r.Index, ref: r}
	if rec.Kind != "upload" || rec.Upload != id || (scope != "" && rec.Scope != scope) || u.expired(s.o.Now(), s.o.ReservationTTL) {
		return nil, fmt.Errorf("%w %d", ErrNoUpload, id)
	}
	return u, nil
}

// PutChunk stores the n bytes of body at off of upload id (v1 PATCH), as
// a part of its own: chunks arrive in any order, at once, on any replica.
func (s *Service) PutChunk(ctx context.Context, scope string, id, off, n int64, body io.Reader) error {
	if off < 0 || n <= 0 || (s.o.MaxSize > 0 && off+n > s.o.MaxSize) {
		if s.o.MaxSize > 0 && off+n > s.o.MaxSize {
			return fmt.Errorf("%w: %d bytes is over this server's largest entry, %d", ErrTooLarge, off+n, s.o.MaxSize)
		}
		return fmt.Errorf("%w: a chunk of %d bytes at %d", ErrInvalid, n, off)
	}
	if _, err := s.loadUpload(ctx, id, scope); err != nil {
		return err
	}
	return s.putPart(ctx, chunkKey(id, off), n, body)
}

// PutBlock stores block blockID of upload id (v2 Put Block).
func (s *Service) PutBlock(ctx context.Context, id int64, blockID string, n int64, body io.Reader) error {
	if blockID == "" || len(blockID) > 1024 {
		return fmt.Errorf("%w: a block id of %d characters", ErrInvalid, len(blockID))
	}
	if n < 0 || (s.o.MaxSize > 0 && n > s.o.MaxSize) {
		return fmt.Errorf("%w: a block of %d bytes", ErrTooLarge, n)
	}
	if _, err := s.loadUpload(ctx, id, ""); err != nil {
		return err
	}
	return s.putPart(ctx, blockKey(id, blockID), n, body)
}

// partHeader starts every part blob: it makes the blob the part's own (two
// uploads of the same bytes never share a part blob, so removing one's
// parts never touches the other's).
func partHeader(key string) []byte { return []byte("tekton-cache gha part " + key + "\n") }

func (s *Service) putPart(ctx context.Context, key string, n int64, body io.Reader) error {
	h := partHeader(key)
	d, err := s.storeStream(ctx, int64(len(h))+n, io.MultiReader(bytes.NewReader(h), body), nil)
	if err != nil {
		return err
	}
	return s.putRef(ctx, key, d, nil, s.o.Now())
}

// PutWhole stores the n bytes of body as upload id's archive (v2 Put Blob).
func (s *Service) PutWhole(ctx context.Context, id, n int64, body io.Reader) error {
	if n < 0 || (s.o.MaxSize > 0 && n > s.o.MaxSize) {
		return fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, n, s.o.MaxSize)
	}
	u, err := s.loadUpload(ctx, id, "")
	if err != nil {
		return err
	}
	d, err := s.storeStream(ctx, n, body, nil)
	if err != nil {
		return err
	}
	return s.putRef(ctx, uploadKey(id), u.recDesc, []format.Descriptor{d}, u.ref.Created)
}

// CommitBlocks assembles upload id's archive from its blocks, in the order
// of ids (v2 Put Block List).
func (s *Service) CommitBlocks(ctx context.Context, id int64, ids []string) error {
	u, err := s.loadUpload(ctx, id, "")
	if err != nil {
		return err
	}
	parts := make([]part, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, b := range ids {
		g.Go(func() error {
			p, err := s.readPart(gctx, blockKey(id, b))
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%w: block %q was not uploaded", ErrInvalid, b)
			}
			parts[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var size int64
	for _, p := range parts {
		size += p.n
	}
	if s.o.MaxSize > 0 && size > s.o.MaxSize {
		return fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, size, s.o.MaxSize)
	}
	d, err := s.assemble(ctx, parts, size)
	if err != nil {
		return err
	}
	return s.putRef(ctx, uploadKey(id), u.recDesc, []format.Descriptor{d}, u.ref.Created)
}

// part is a part of an upload: its blob, the data's length after the
// header, and (v1) its offset.
type part struct {
	key  string
	blob format.Descriptor
	off  int64
	n    int64
}

func (s *Service) readPart(ctx context.Context, key string) (part, error) {
	r, err := s.st.GetRef(ctx, key)
	if err != nil {
		return part{}, err
	}
	n := r.Index.Size - int64(len(partHeader(key)))
	if n < 0 {
		return part{}, fmt.Errorf("%w: part %s is shorter than its header", ErrInvalid, key)
	}
	return part{key: key, blob: r.Index, n: n}, nil
}

// Commit assembles v1 upload id from its chunks, which must cover
// [0, size) exactly, and publishes it.
func (s *Service) Commit(ctx context.Context, scope string, id, size int64) (*Entry, error) {
	if size < 0 || (s.o.MaxSize > 0 && size > s.o.MaxSize) {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, size, s.o.MaxSize)
	}
	u, err := s.loadUpload(ctx, id, scope)
	if err != nil {
		return nil, err
	}
	keys, err := s.st.ListRefs(ctx, partsPrefix(id)+"o")
	if err != nil {
		return nil, err
	}
	parts := make([]part, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, k := range keys {
		g.Go(func() error {
			off, err := strconv.ParseInt(strings.TrimPrefix(k, partsPrefix(id)+"o"), 16, 64)
			if err != nil {
				return fmt.Errorf("%w: part %s", ErrInvalid, k)
			}
			p, err := s.readPart(gctx, k)
			p.off = off
			parts[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(parts, func(a, b part) int { return cmp.Compare(a.off, b.off) })
	var at int64
	for _, p := range parts {
		if p.off != at {
			return nil, fmt.Errorf("%w: the chunks uploaded do not cover bytes %d to %d of %d exactly (a chunk at %d)", ErrInvalid, at, p.off, size, p.off)
		}
		at += p.n
	}
	if at != size {
		return nil, fmt.Errorf("%w: %d bytes were uploaded, the commit says %d", ErrInvalid, at, size)
	}
	d, err := s.assemble(ctx, parts, size)
	if err != nil {
		return nil, err
	}
	return s.publish(ctx, u, d)
}

// Finalize publishes the v2 upload of (key, version) in scope, whose
// archive must be size bytes.
func (s *Service) Finalize(ctx context.Context, scope, key, version string, size int64) (*Entry, error) {
	if err := checkKeyVersion(key, version); err != nil {
		return nil, err
	}
	res, err := s.reservation(ctx, nameKey(reserveNS, scope, version, key))
	if err != nil {
		return nil, err
	}
	if res == nil || res.rec.Scope != scope || res.rec.Key != key || res.rec.Version != version {
		return nil, fmt.Errorf("%w: no upload of key %q in scope %s", ErrNoUpload, key, scope)
	}
	u, err := s.loadUpload(ctx, res.id, scope)
	if err != nil {
		return nil, err
	}
	if len(u.ref.Packs) != 1 {
		return nil, fmt.Errorf("%w: nothing was uploaded for key %q", ErrInvalid, key)
	}
	if d := u.ref.Packs[0]; d.Size != size {
		return nil, fmt.Errorf("%w: %d bytes were uploaded, the finalize says %d", ErrInvalid, d.Size, size)
	}
	return s.publish(ctx, u, u.ref.Packs[0])
}

// publish makes upload u's archive d the entry of its key, if u still
// holds the reservation, then drops the upload.
func (s *Service) publish(ctx context.Context, u *upload, d format.Descriptor) (*Entry, error) {
	rk := nameKey(reserveNS, u.rec.Scope, u.rec.Version, u.rec.Key)
	r, err := s.st.GetRef(ctx, rk)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err != nil || r.Index != u.recDesc {
		return nil, fmt.Errorf("%w: another upload of key %q took over this one's reservation", ErrExists, u.rec.Key)
	}
	now := s.o.Now()
	rec := &record{Kind: "entry", Scope: u.rec.Scope, Key: u.rec.Key, Version: u.rec.Version, Archive: &d, Created: now.UTC()}
	rd, err := s.putRecord(ctx, rec)
	if err != nil {
		return nil, err
	}
	ek := nameKey(entryNS, u.rec.Scope, u.rec.Version, u.rec.Key)
	if err := s.putRef(ctx, ek, rd, []format.Descriptor{d}, now); err != nil {
		return nil, err
	}
	if err := s.drop(ctx, u); err != nil {
		s.o.Logf("warning: gha: cleaning up upload %d: %v (Expire retries)", u.id, err)
	}
	return &Entry{Scope: u.rec.Scope, Key: u.rec.Key, Version: u.rec.Version, Archive: d, Created: now, Ref: ek}, nil
}

// drop removes upload u: its parts (refs and blobs), its reservation if it
// still holds it, then its own ref, last, so that a drop cut short is done
// again by Expire. An archive it assembled stays, for an entry may share
// it; the GC sweeps it when none does.
func (s *Service) drop(ctx context.Context, u *upload) error {
	if err := s.dropParts(ctx, u.id); err != nil {
		return err
	}
	rk := nameKey(reserveNS, u.rec.Scope, u.rec.Version, u.rec.Key)
	if r, err := s.st.GetRef(ctx, rk); err == nil && r.Index == u.recDesc {
		if err := s.dropRef(ctx, rk); err != nil {
			return err
		}
	}
	if err := s.dropRef(ctx, uploadKey(u.id)); err != nil {
		return err
	}
	// The upload's record is its own (it holds its id): no entry names it.
	if err := s.del.DeleteBlob(ctx, u.recDesc.Digest); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

func (s *Service) dropRef(ctx context.Context, key string) error {
	if err := s.del.DeleteRef(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

func (s *Service) dropParts(ctx context.Context, id int64) error {
	keys, err := s.st.ListRefs(ctx, partsPrefix(id))
	if err != nil {
		return err
	}
	return s.dropPartKeys(ctx, keys)
}

func (s *Service) dropPartKeys(ctx context.Context, keys []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, k := range keys {
		g.Go(func() error {
			r, err := s.st.GetRef(gctx, k)
			if err == nil {
				if err := s.del.DeleteBlob(gctx, r.Index.Digest); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			} else if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrDamagedRef) {
				return err
			}
			return s.dropRef(gctx, k)
		})
	}
	return g.Wait()
}

// ExpireResult says what Expire removed.
type ExpireResult struct {
	Uploads, Parts int
}

// Expire removes the uploads reserved more than the reservation TTL ago,
// with their parts, and parts whose upload is gone.
func (s *Service) Expire(ctx context.Context) (ExpireResult, error) {
	var res ExpireResult
	now := s.o.Now()
	keys, err := s.st.ListRefs(ctx, uploadNS)
	if err != nil {
		return res, err
	}
	live := map[string]bool{}
	for _, k := range keys {
		id, err := strconv.ParseInt(strings.TrimPrefix(k, uploadNS), 10, 64)
		if err != nil {
			continue
		}
		u, err := s.loadUploadAny(ctx, id)
		if err != nil {
			return res, err
		}
		if u != nil && !u.expired(now, s.o.ReservationTTL) {
			live[partsPrefix(id)] = true
			continue
		}
		if u == nil {
			if err := s.dropParts(ctx, id); err != nil {
				return res, err
			}
			if err := s.dropRef(ctx, k); err != nil {
				return res, err
			}
		} else if err := s.drop(ctx, u); err != nil {
			return res, err
		}
		res.Uploads++
	}
	// Reservations left by an upload that is gone (a drop cut short, or
	// overwritten after it expired) or expired.
	rks, err := s.st.ListRefs(ctx, reserveNS)
	if err != nil {
		return res, err
	}
	for _, rk := range rks {
		u, err := s.reservation(ctx, rk)
		if err != nil {
			return res, err
		}
		if u != nil && !u.expired(now, s.o.ReservationTTL) {
			if _, err := s.st.GetRef(ctx, uploadKey(u.id)); err == nil {
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return res, err
			}
		}
		if err := s.dropRef(ctx, rk); err != nil {
			return res, err
		}
	}
	parts, err := s.st.ListRefs(ctx, partNS)
	if err != nil {
		return res, err
	}
	var orphans []string
	for _, k := range parts {
		rest := strings.TrimPrefix(k, partNS)
		id, _, _ := strings.Cut(rest, ".")
		if !live[partNS+id+"."] {
			orphans = append(orphans, k)
		}
	}
	res.Parts = len(orphans)
	if res.Uploads > 0 || res.Parts > 0 {
		s.o.Logf("gha: expired %d unfinished uploads (%d parts)", res.Uploads, res.Parts)
	}
	return res, s.dropPartKeys(ctx, orphans)
}

// loadUploadAny is upload id whatever its age, or nil when its record is
// gone or unreadable.
func (s *Service) loadUploadAny(ctx context.Context, id int64) (*upload, error) {
	r, err := s.st.GetRef(ctx, uploadKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if errors.Is(err, store.ErrDamagedRef) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rec, err := s.record(ctx, r.Index)
	if err != nil || rec.Kind != "upload" || rec.Upload != id {
		return nil, nil
	}
	return &upload{id: id, rec: rec, recDesc: r.Index, ref: r}, nil
}

// Open reads the archive of an entry from off.
func (s *Service) Open(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, error) {
	if br, ok := store.As[store.BlobRanger](s.st); ok && off > 0 {
		return br.GetBlobRange(ctx, d, off)
	}
	rc, err := s.st.GetBlob(ctx, d)
	if err == nil && off > 0 {
		if _, err = io.CopyN(io.Discard, rc, off); err != nil {
			rc.Close()
			return nil, err
		}
	}
	return rc, err
}
