// Package archive is the entry format of docs/FORMAT.md: the index (every
// file's path, type, mode, mtime, size, content digest and pack), packs
// (zstd-compressed tar streams of whole files, valid OCI layers), the walk
// that builds an index from directories, and safe extraction.
//
// It knows nothing of stores: package engine moves its blobs.
package archive

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	fastjson "github.com/segmentio/encoding/json"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/format"
)

// Entry types.
const (
	TypeFile    = "f"
	TypeDir     = "d"
	TypeSymlink = "l"
)

// NoPack marks an entry whose content is in no pack (dirs, links, empty files).
const NoPack = -1

// Entry is one file, directory or symlink of a cached folder.
type Entry struct {
	// Root is the position of the folder (in Index.Roots) the entry is in.
	Root int `json:"r,omitempty"`
	// Path is relative to its root, '/'-separated, clean, never "." or "..".
	Path string `json:"p"`
	Type string `json:"t"`
	// Mode holds the permission bits (0o777).
	Mode uint32 `json:"m"`
	// MTime is the modification time in Unix nanoseconds.
	MTime int64 `json:"mt"`
	// Size and Digest (sha256, hex in the JSON) describe a file's content.
	Size   int64      `json:"s,omitempty"`
	Digest digest.Sum `json:"d,omitzero"`
	// Link is a symlink's target.
	Link string `json:"l,omitempty"`
	// Pack is the position (in Index.Packs) of the pack that holds the
	// content, or NoPack.
	Pack int `json:"k"`
	// Offset is where the file's tar header starts in the pack's
	// uncompressed stream: a save measures a pack it reuses by them
	// (restore reads packs in order, and needs no offset).
	Offset int64 `json:"o,omitempty"`
}

// Index is the table of contents of a cache entry.
type Index struct {
	Format int `json:"format"`
	// Roots are the base names of the folders the entry was saved from
	// (store.Ref.Folders has them as given); restore maps
	// them by position to the folders it is given.
	Roots   []string            `json:"roots"`
	Packs   []format.Descriptor `json:"packs"`
	Entries []Entry             `json:"entries"`
	// IDs, when set (by Walk), holds each entry's FileID as the walk saw it,
	// parallel to Entries. It is not part of the encoded index.
	IDs []FileID `json:"-"`
}

// TarName is the name of e inside a pack: its path, prefixed by its root's
// position when the entry has several roots.
func (x *Index) TarName(e *Entry) string {
	if len(x.Roots) <= 1 {
		return e.Path
	}
	return fmt.Sprintf("%d/%s", e.Root, e.Path)
}

// CompareEntries is the order of Sort: by root, then path.
func CompareEntries(a, b *Entry) int {
	if c := cmp.Compare(a.Root, b.Root); c != 0 {
		return c
	}
	return strings.Compare(a.Path, b.Path)
}

// Sort orders the entries by root then path, the order of packs and of
// extraction (parents before children).
func (x *Index) Sort() {
	// Sort positions, then move each entry (about 100 bytes) once, rather
	// than at every swap: tens of thousands of them in a no-op save. The
	// entries (and IDs) are permuted in place, cycle by cycle: no second
	// slice of them (600,000 entries: 67 MB).
	order := make([]int32, len(x.Entries))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int { return CompareEntries(&x.Entries[i], &x.Entries[j]) })
	ids := len(x.IDs) == len(x.Entries)
	// Position i gets the entry at order[i]; a position done is marked
	// order[i] = i.
	for i := range order {
		if order[i] == int32(i) {
			continue
		}
		e := x.Entries[i]
		var id FileID
		if ids {
			id = x.IDs[i]
		}
		j := int32(i)
		for {
			k := order[j]
			order[j] = j
			if k == int32(i) {
				x.Entries[j] = e
				if ids {
					x.IDs[j] = id
				}
				break
			}
			x.Entries[j] = x.Entries[k]
			if ids {
				x.IDs[j] = x.IDs[k]
			}
			j = k
		}
	}
}

// Equal reports whether x and y hold the same roots, packs and entries.
func (x *Index) Equal(y *Index) bool {
	return x.Format == y.Format && slices.Equal(x.Roots, y.Roots) &&
		slices.Equal(x.Packs, y.Packs) && slices.Equal(x.Entries, y.Entries)
}

// TotalSize is the sum of the sizes of the files.
func (x *Index) TotalSize() int64 {
	var n int64
	for i := range x.Entries {
		n += x.Entries[i].Size
	}
	return n
}

// Encode returns the index as zstd-compressed JSON. The same index always
// gives the same bytes.
func (x *Index) Encode() ([]byte, error) {
	var out bytes.Buffer
	// Compressed, an entry takes 40-70 bytes: sized once, not grown by
	// copies.
	out.Grow(4096 + 64*len(x.Entries))
	if err := x.EncodeTo(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// EncodeTo writes the index to w as zstd-compressed JSON, the bytes of
// Encode. The JSON (that of json.Marshal(x)) is written into the zstd
// stream an entry at a time, never held whole: about 200 bytes an entry,
// 120 MB for 600,000 of them, grown by doubling.
func (x *Index) EncodeTo(w io.Writer) error {
	enc := encoderPool.Get().(*zstd.Encoder)
	defer encoderPool.Put(enc)
	enc.Reset(w)
	bw := bufio.NewWriterSize(enc, 64<<10)
	// The members before the entries, in Index's order.
	head, err := json.Marshal(struct {
		Format int                 `json:"format"`
		Roots  []string            `json:"roots"`
		Packs  []format.Descriptor `json:"packs"`
	}{x.Format, x.Roots, x.Packs})
	if err != nil {
		return err
	}
	bw.Write(head[:len(head)-1])
	bw.WriteString(`,"entries":`)
	if x.Entries == nil {
		bw.WriteString("null")
	} else {
		// json.Marshal's bytes for each entry, appended to one buffer.
		var buf []byte
		bw.WriteByte('[')
		for i := range x.Entries {
			buf = buf[:0]
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendEntryJSON(buf, &x.Entries[i])
			bw.Write(buf)
		}
		bw.WriteByte(']')
	}
	bw.WriteByte('}')
	if err := bw.Flush(); err != nil {
		return err
	}
	return enc.Close()
}

// appendEntryJSON appends json.Marshal(e) to buf (TestEncodeStreams and
// FuzzEntryJSON compare them), without reflection or an allocation per
// entry: an index is written an entry at a time, 600,000 of them for a
// large cache.
func appendEntryJSON(buf []byte, e *Entry) []byte {
	buf = append(buf, '{')
	if e.Root != 0 {
		buf = append(buf, `"r":`...)
		buf = strconv.AppendInt(buf, int64(e.Root), 10)
		buf = append(buf, ',')
	}
	buf = append(buf, `"p":`...)
	buf = appendJSONString(buf, e.Path)
	buf = append(buf, `,"t":`...)
	buf = appendJSONString(buf, e.Type)
	buf = append(buf, `,"m":`...)
	buf = strconv.AppendUint(buf, uint64(e.Mode), 10)
	buf = append(buf, `,"mt":`...)
	buf = strconv.AppendInt(buf, e.MTime, 10)
	if e.Size != 0 {
		buf = append(buf, `,"s":`...)
		buf = strconv.AppendInt(buf, e.Size, 10)
	}
	if !e.Digest.IsZero() {
		buf = append(buf, `,"d":"`...)
		buf = hex.AppendEncode(buf, e.Digest[:])
		buf = append(buf, '"')
	}
	if e.Link != "" {
		buf = append(buf, `,"l":`...)
		buf = appendJSONString(buf, e.Link)
	}
	buf = append(buf, `,"k":`...)
	buf = strconv.AppendInt(buf, int64(e.Pack), 10)
	if e.Offset != 0 {
		buf = append(buf, `,"o":`...)
		buf = strconv.AppendInt(buf, e.Offset, 10)
	}
	return append(buf, '}')
}

// appendJSONString appends s quoted as json.Marshal quotes it: printable
// ASCII other than '"', '\\' and the HTML characters as it is (every
// path of most caches), anything else through json.Marshal.
func appendJSONString(buf []byte, s string) []byte {
	if !jsonPlain(s) {
		q, _ := json.Marshal(s) // a string always marshals
		return append(buf, q...)
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// jsonPlain reports whether json.Marshal quotes s as it is: printable
// ASCII other than '"', '\\' and the HTML characters.
func jsonPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// DefaultMaxIndexEntries is the most entries an index may hold unless
// SetMaxIndexEntries says otherwise (CACHE_MAX_INDEX_ENTRIES): decoding
// costs about 260 bytes allocated and 145 live per entry with 70-character
// paths (docs/FORMAT.md), so the default bounds a hostile index to about
// 0.5 GB allocated and 0.3 GB live.
const DefaultMaxIndexEntries = 2_000_000

// IndexBytesPerEntry bounds the decompressed index per allowed entry: an
// entry's JSON is about 130 bytes and its path, so this leaves room for
// paths of 350 characters on average.
const IndexBytesPerEntry = 512

var maxIndexEntries atomic.Int64

func init() { maxIndexEntries.Store(DefaultMaxIndexEntries) }

// SetMaxIndexEntries sets the cap on an index's entries (n > 0), and with
// it the cap on its decompressed size (n x IndexBytesPerEntry + 1 MiB).
func SetMaxIndexEntries(n int64) { maxIndexEntries.Store(n) }

// MaxIndexEntries is the cap SetMaxIndexEntries set.
func MaxIndexEntries() int64 { return maxIndexEntries.Load() }

// ErrIndexTooLarge is wrapped by the error of an index past the caps.
var ErrIndexTooLarge = errors.New("index too large")

// maxIndexSize is the decompressed size an index may have; a variable so
// that a test can lower it.
var maxIndexSize = func() uint64 { return uint64(MaxIndexEntries())*IndexBytesPerEntry + 1<<20 }

func tooManyEntries(what string, max int64) error {
	return fmt.Errorf("%w: it has %s, past the cap of %d entries (CACHE_MAX_INDEX_ENTRIES, --max-index-entries): refused; raise the cap if the cache really holds that many files", ErrIndexTooLarge, what, max)
}

// countObjects counts the '{' outside strings of JSON text: an upper
// bound on the entries it holds (each entry is an object), found before
// the parser spends memory on them. It stops past limit.
func countObjects(raw []byte, limit int64) int64 {
	var c objectCounter
	c.count(raw, limit)
	return c.n
}

// objectCounter counts the '{' outside strings of JSON text given in
// pieces.
type objectCounter struct {
	n                 int64
	inString, escaped bool
}

// count counts the objects of the next piece of text, stopping past limit.
func (o *objectCounter) count(raw []byte, limit int64) {
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case o.escaped:
			o.escaped = false
		case o.inString:
			end, esc := stringEnd(raw[i:])
			if end < 0 {
				o.escaped = esc
				return
			}
			i += end
			o.inString = false
		case c == '"':
			o.inString = true
		case c == '{':
			if o.n++; o.n > limit {
				return
			}
		}
	}
}

// DecodeIndex parses and validates an index blob. An index past the cap
// on entries (SetMaxIndexEntries) is refused as soon as it is seen to be:
// its decompressed size is bounded from the cap, and its entries are
// parsed one at a time from the zstd stream (decodeIndexStream), so that
// the text is never held whole and parsing stops one entry past the cap.
// An index in another layout than our writer's is read whole, with its
// objects counted before it is parsed.
func DecodeIndex(blob []byte) (*Index, error) { return DecodeIndexSized(blob, 0) }

// DecodeIndexSized is DecodeIndex for a caller that expects about entries
// entries (a restore state's header says how many its index has): the
// pass that counts them before they are parsed, a second decompression of
// the whole blob, is skipped, and the entries' slice starts at that size
// (bounded by the blob's size and the cap on entries). A wrong guess costs memory or copies, never
// correctness; 0 or less counts as DecodeIndex does.
func DecodeIndexSized(blob []byte, entries int) (*Index, error) {
	maxEntries, maxSize := MaxIndexEntries(), maxIndexSize()
	tooLarge := func() error {
		return fmt.Errorf("%w: it is larger than %d bytes uncompressed (%d entries of %d bytes, CACHE_MAX_INDEX_ENTRIES): refused", ErrIndexTooLarge, maxSize, maxEntries, IndexBytesPerEntry)
	}
	// The objects are counted first, in a pass that holds nothing (the
	// top-level object and each pack are objects too: packs hold about 4
	// MiB each, so a quarter of the cap leaves room for them short of
	// terabytes of content); the count then sizes the entries.
	limit := maxEntries + maxEntries/4 + 16
	var count objectCounter
	var err error
	if entries > 0 {
		// Untrusted: the slice it sizes is bounded by the blob (an entry
		// takes more than 4 compressed bytes) and the cap.
		count.n = min(int64(entries), maxEntries, int64(len(blob)/4+16))
	} else {
		err = streamIndex(bytes.NewReader(blob), maxSize, func(r io.Reader) error {
			buf := make([]byte, 64<<10)
			for {
				n, err := r.Read(buf)
				if count.count(buf[:n], limit); count.n > limit {
					return tooManyEntries(fmt.Sprintf("more than %d objects", limit), maxEntries)
				}
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
			}
		})
	}
	var x *Index
	if err == nil {
		err = streamIndex(bytes.NewReader(blob), maxSize, func(r io.Reader) (err error) {
			x, err = decodeIndexStream(r, maxEntries, int(count.n), nil)
			return err
		})
	}
	if errors.Is(err, errNotCanonical) {
		x, err = decodeIndexWhole(blob, maxEntries, maxSize)
	}
	switch {
	case errors.Is(err, errIndexSize) || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded):
		return nil, tooLarge()
	case errors.Is(err, ErrIndexTooLarge) || errors.Is(err, errDecompress) || errors.Is(err, format.ErrUnsupported):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("decoding index: %w", err)
	}
	if int64(len(x.Entries)) > maxEntries {
		return nil, tooManyEntries(fmt.Sprintf("%d entries", len(x.Entries)), maxEntries)
	}
	if err := x.Validate(); err != nil {
		return nil, err
	}
	return x, nil
}

// VisitIndex decodes the index blob as DecodeIndex does, but gives each
// entry and its position to visit as it is parsed, in a variable reused
// for the next, and keeps none: the Index returned has its roots and
// packs, no entries. The entry's strings are valid only until visit
// returns (they may be the decoder's buffer): strings.Clone what is kept. Position 0 may come more than once: an index in
// another layout than our writer's is found so partway, and is then
// decoded whole and visited from its first entry again. The
// entries are NOT validated (Validate needs them all): visit must treat
// them as untrusted, for what they claim only (a restore state's proofs,
// which a file must match exactly to be believed).
func VisitIndex(blob []byte, visit func(int, *Entry) error) (*Index, error) {
	return VisitIndexAt(bytes.NewReader(blob), int64(len(blob)), "", visit)
}

// VisitIndexAt is VisitIndex over the size bytes of blob at r, read as
// they are decoded and never held whole (but for an index in another layout
// than our writer's, read whole once). When d is not "", the bytes must
// have digest d: they are hashed as they are read, and a mismatch fails
// the visit, after entries were visited: the caller then drops what it
// kept of them. So a 28 MB index on disk (a restore state's) is joined in
// a buffer's memory.
func VisitIndexAt(r io.ReaderAt, size int64, d digest.Digest, visit func(int, *Entry) error) (*Index, error) {
	maxEntries, maxSize := MaxIndexEntries(), maxIndexSize()
	open := func() io.Reader {
		if d == "" {
			return io.NewSectionReader(r, 0, size)
		}
		return digest.NewVerifier(io.NewSectionReader(r, 0, size), d, size)
	}
	src := bufio.NewReaderSize(open(), 256<<10)
	var x *Index
	err := streamIndex(src, maxSize, func(r io.Reader) (err error) {
		x, err = decodeIndexStream(r, maxEntries, 0, visit)
		return err
	})
	streamed := true
	if errors.Is(err, errNotCanonical) {
		streamed = false // read whole, and checked, again
		var blob []byte
		if blob, err = io.ReadAll(open()); err == nil {
			x, err = decodeIndexWhole(blob, maxEntries, maxSize)
		}
		if err == nil {
			for i := range x.Entries {
				if err = visit(i, &x.Entries[i]); err != nil {
					break
				}
			}
			x.Entries = nil
		}
	}
	if err == nil && streamed {
		// What the decoder left unread (a frame's end) is checked too.
		_, err = io.Copy(io.Discard, src)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding index: %w", err)
	}
	if err := format.Check("index", x.Format); err != nil {
		return nil, err
	}
	return x, nil
}

// streamIndex calls f with the decompressed stream of blob, which fails
// past maxSize bytes.
func streamIndex(blob io.Reader, maxSize uint64, f func(r io.Reader) error) error {
	// Streaming, the decoder's memory cap is its window's (our writer's
	// is at most 8 MiB); the limitReader bounds the size.
	dec, err := zstd.NewReader(blob, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxStreamWindow))
	if err != nil {
		return err
	}
	defer dec.Close()
	ahead := newReadAhead(&limitReader{r: &decompressReader{dec}, n: int64(maxSize)})
	defer ahead.Close() // before dec.Close: the goroutine reads dec
	return f(ahead)
}

// errDecompress is wrapped by the errors of an index that does not
// decompress.
var errDecompress = errors.New("decompressing index")

// decompressReader marks the errors of r (a zstd stream) with errDecompress.
type decompressReader struct{ r io.Reader }

func (d *decompressReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: %w", errDecompress, err)
	}
	return n, err
}

// decodeIndexWhole decompresses blob whole (at most maxSize bytes), counts
// its objects before parsing it, and parses it with the decoder of its
// format version.
func decodeIndexWhole(blob []byte, maxEntries int64, maxSize uint64) (*Index, error) {
	// A decoder of its own: one that streamed cannot DecodeAll.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxSize))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	// DecodeAll sizes its output from the frame header and stops at the limit.
	raw, err := dec.DecodeAll(blob, nil)
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDecompress, err)
	}
	// The top-level object and each pack are objects too: packs hold
	// about 4 MiB each, so a quarter of the cap leaves room for them
	// short of terabytes of content.
	if limit := maxEntries + maxEntries/4 + 16; countObjects(raw, limit) > limit {
		return nil, tooManyEntries(fmt.Sprintf("more than %d objects", limit), maxEntries)
	}
	v, err := peekFormat(raw)
	if err != nil {
		return nil, err
	}
	if err := format.Check("index", v); err != nil {
		return nil, err
	}
	return indexDecoders[v](raw)
}

// indexDecoders parse the JSON of each format version this build reads
// (format.MinVersion to format.MaxVersion) into an Index.
var indexDecoders = map[int]func(raw []byte) (*Index, error){
	1: decodeIndexV1,
}

// decodeIndexV1 parses a version 1 index, refusing unknown fields.
func decodeIndexV1(raw []byte) (*Index, error) {
	// segmentio's parser follows encoding/json's rules at about six times
	// its speed (28,000 entries: 24 ms instead of 138 ms, which was a third
	// of a no-op save's CPU).
	var x Index
	rest, err := fastjson.Parse(raw, &x, fastjson.DisallowUnknownFields)
	if err == nil && len(bytes.TrimSpace(rest)) > 0 {
		err = errors.New("data after the index")
	}
	if err != nil {
		return nil, err
	}
	return &x, nil
}

// peekFormat returns the "format" member of an index's JSON object, which
// decides its decoder. Writers put it first, so that reading it costs a few
// tokens; an index with it elsewhere is read whole once more.
func peekFormat(raw []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0, errors.New("an index is a JSON object")
	}
	if t, err := dec.Token(); err == nil && t == "format" {
		var v int
		if err := dec.Decode(&v); err != nil {
			return 0, fmt.Errorf("format: %w", err)
		}
		return v, nil
	}
	var head struct {
		Format *int `json:"format"`
	}
	if _, err := fastjson.Parse(raw, &head, 0); err != nil {
		return 0, err
	}
	if head.Format == nil {
		return 0, errors.New("the index has no format")
	}
	return *head.Format, nil
}

// ErrUnsafe is wrapped by the error of an index entry that extraction
// refuses: an absolute path, "..", a link out of the root, a device file, a
// size that lies.
var ErrUnsafe = errors.New("unsafe entry")

func unsafeErr(e *Entry, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrUnsafe, e.Path, fmt.Sprintf(format, args...))
}

// ValidPath reports why p cannot be an entry path, or nil.
func ValidPath(p string) error {
	switch {
	case p == "" || p == "." || p == "..":
		return errors.New("empty or dot path")
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute path")
	case strings.ContainsRune(p, 0):
		return errors.New("NUL in path")
	case strings.Contains(p, "\\"):
		return errors.New(`backslash in path`)
	case path.Clean(p) != p:
		return errors.New("path is not clean")
	case p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/.."):
		return errors.New(`".." in path`)
	}
	return nil
}

// sorted reports whether each entry sorts strictly after the one before
// it, by root then path (the order of Sort).
func (x *Index) sorted() bool {
	for i := 1; i < len(x.Entries); i++ {
		if CompareEntries(&x.Entries[i-1], &x.Entries[i]) >= 0 {
			return false
		}
	}
	return true
}

// Validate checks every entry before anything is written: paths, types,
// parents, links, sizes, digests and pack references.
func (x *Index) Validate() error {
	if err := format.Check("index", x.Format); err != nil {
		return err
	}
	if len(x.Roots) == 0 {
		return errors.New("index has no roots")
	}
	for _, p := range x.Packs {
		if err := p.Digest.Validate(); err != nil {
			return fmt.Errorf("index pack: %w", err)
		}
	}
	// An index in the order Sort gives (every index this tool writes) has
	// no duplicates if each entry sorts after the one before, and a
	// parent is found by binary search among the entries before it; any
	// other order is checked with a map of every path (at 600,000 entries,
	// 90 MB allocated for the check alone).
	sorted := x.sorted()
	var kinds []map[string]string
	if !sorted {
		kinds = make([]map[string]string, len(x.Roots))
		for i := range kinds {
			kinds[i] = make(map[string]string, len(x.Entries)/len(x.Roots))
		}
	}
	lastParent := -1 // sorted: the entry the last parent lookup found
	kindOf := func(i, root int, p string) string {
		if !sorted {
			return kinds[root][p]
		}
		if j := lastParent; j >= 0 && x.Entries[j].Root == root && x.Entries[j].Path == p {
			return x.Entries[j].Type
		}
		j, found := slices.BinarySearchFunc(x.Entries[:i], Entry{Root: root, Path: p}, func(e, target Entry) int { return CompareEntries(&e, &target) })
		if !found {
			return ""
		}
		lastParent = j
		return x.Entries[j].Type
	}
	// A restore needs no offset (it reads packs in order), but one
	// outside its pack is a forged index: refused before anything is written.
	bounds := x.PackBounds()
	for i := range x.Entries {
		e := &x.Entries[i]
		if e.Offset < 0 || (e.Pack >= 0 && e.Pack < len(bounds) && e.Offset >= bounds[e.Pack]) || (e.Pack == NoPack && e.Offset != 0) {
			return unsafeErr(e, "offset %d is outside its pack", e.Offset)
		}
		if e.Root < 0 || e.Root >= len(x.Roots) {
			return unsafeErr(e, "root %d out of range", e.Root)
		}
		if err := ValidPath(e.Path); err != nil {
			return unsafeErr(e, "%v", err)
		}
		if e.Mode&^0o777 != 0 {
			return unsafeErr(e, "mode %o has bits other than permissions", e.Mode)
		}
		if !sorted {
			if _, dup := kinds[e.Root][e.Path]; dup {
				return unsafeErr(e, "listed twice")
			}
		}
		if parent := path.Dir(e.Path); parent != "." {
			switch kindOf(i, e.Root, parent) {
			case TypeDir:
			case "":
				return unsafeErr(e, "its parent %q is not listed before it", parent)
			default:
				return unsafeErr(e, "its parent %q is not a directory (writing through a link is refused)", parent)
			}
		}
		if !sorted {
			kinds[e.Root][e.Path] = e.Type
		}
		switch e.Type {
		case TypeDir:
			if e.Size != 0 || e.Pack != NoPack || e.Link != "" || !e.Digest.IsZero() {
				return unsafeErr(e, "a directory with content")
			}
		case TypeFile:
			if e.Size < 0 {
				return unsafeErr(e, "negative size")
			}
			if e.Size == 0 && e.Pack != NoPack {
				return unsafeErr(e, "an empty file in a pack")
			}
			if e.Size > 0 {
				if e.Pack < 0 || e.Pack >= len(x.Packs) {
					return unsafeErr(e, "pack %d out of range", e.Pack)
				}
				if e.Digest.IsZero() {
					return unsafeErr(e, "a file without a content digest")
				}
			}
		case TypeSymlink:
			if e.Pack != NoPack || e.Size != 0 || !e.Digest.IsZero() {
				return unsafeErr(e, "a symlink with content")
			}
		default:
			return unsafeErr(e, "type %q is not a file, directory or symlink (devices, fifos and hard links are refused)", e.Type)
		}
	}
	// Links last: a link may point at an entry listed after it.
	res := newLinkResolvers(len(x.Roots), x.Entries)
	for i := range x.Entries {
		e := &x.Entries[i]
		if e.Type == TypeSymlink {
			if err := res[e.Root].check(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxLinkDepth bounds how deeply links may resolve through other links; a
// loop exceeds it and is refused.
const maxLinkDepth = 40

// linkResolver resolves the symlinks of one root through one another,
// computing each link's target once (a link may be reached through
// thousands of others, and a chain that goes through the same links twice
// would otherwise cost 2^depth).
type linkResolver struct {
	links map[string]*linkNode // every link of the root, by path
}

// linkNode is one link and what is known of its resolution.
type linkNode struct {
	link   string // its target, as written
	state  linkState
	target string // linkResolved: where it leads, '.'-relative
	// height is, for linkResolved, how deeply its resolution nests links in
	// links (0: it goes through none); for linkTooDeep, the depth budget it
	// was known to exceed.
	height int
}

type linkState uint8

const (
	linkResolving linkState = iota + 1 // on the stack: reaching it again is a loop
	linkResolved
	linkTooDeep // needs more than height levels: retried with a larger budget
	linkRefused // leaves the root or loops, whatever the budget
)

// newLinkResolvers indexes the links of each root once.
func newLinkResolvers(roots int, entries []Entry) []*linkResolver {
	res := make([]*linkResolver, roots)
	n := 0
	for i := range entries {
		if entries[i].Type == TypeSymlink {
			n++
		}
	}
	for i := range res {
		res[i] = &linkResolver{links: make(map[string]*linkNode, n/roots)}
	}
	for i := range entries {
		if e := &entries[i]; e.Type == TypeSymlink {
			res[e.Root].links[e.Path] = &linkNode{link: e.Link}
		}
	}
	return res
}

// check refuses a symlink e, one of the resolver's links, whose target,
// resolved through the links of the index, leaves the root.
func (r *linkResolver) check(e *Entry) error {
	if e.Link == "" || strings.ContainsRune(e.Link, 0) {
		return unsafeErr(e, "empty link target")
	}
	if strings.HasPrefix(e.Link, "/") {
		return unsafeErr(e, "link to absolute path %q", e.Link)
	}
	if _, _, st := r.resolveLink(e.Path, r.links[e.Path], maxLinkDepth); st != linkResolved {
		return unsafeErr(e, "link target %q leaves the root", e.Link)
	}
	return nil
}

// resolveLink resolves the link m (at path p) with budget levels of nesting left
// (budget < 0: none) and returns where it leads, how deeply it nests links
// (see linkNode.height) and linkResolved, or why not: linkTooDeep (too
// deep for this budget) or linkRefused (out of the root, or a loop). Each
// link is resolved once, or once more per larger budget after a too-deep
// attempt: at most maxLinkDepth+2 times.
func (r *linkResolver) resolveLink(p string, m *linkNode, budget int) (string, int, linkState) {
	if budget < 0 {
		return "", 0, linkTooDeep
	}
	switch m.state {
	case linkResolving:
		return "", 0, linkRefused // p leads through itself
	case linkRefused:
		return "", 0, linkRefused
	case linkResolved:
		if m.height > budget {
			return "", 0, linkTooDeep
		}
		return m.target, m.height, linkResolved
	case linkTooDeep:
		if budget <= m.height {
			return "", 0, linkTooDeep
		}
	}
	if strings.HasPrefix(m.link, "/") {
		m.state = linkRefused
		return "", 0, linkRefused
	}
	m.state = linkResolving
	target, height, st := r.walk(path.Dir(p), m.link, budget)
	switch st {
	case linkResolved:
		m.state, m.target, m.height = linkResolved, target, height
	case linkTooDeep:
		m.state, m.height = linkTooDeep, budget
	default:
		m.state = linkRefused
	}
	return target, height, st
}

// walk follows target from dir ('.'-relative) component by component,
// resolving the links it meets with one level of budget less, and returns
// the '.'-relative path it leads to and how deeply it nested links, or why
// it failed (see resolveLink). The resolution is lexical, as the kernel's:
// ".." goes up from where the links led.
func (r *linkResolver) walk(dir, target string, budget int) (string, int, linkState) {
	var buf [256]byte
	var ends [32]int
	cur := linkPath{p: buf[:0], ends: ends[:0]}
	cur.set(dir)
	height := 0
	for c := range strings.SplitSeq(target, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if !cur.up() {
				return "", 0, linkRefused
			}
			continue
		}
		cur.push(c)
		m := r.links[string(cur.p)]
		if m == nil {
			continue
		}
		to, h, st := r.resolveLink(string(cur.p), m, budget-1)
		if st != linkResolved {
			return "", 0, st
		}
		height = max(height, 1+h)
		cur.set(to)
	}
	if len(cur.p) == 0 {
		return ".", height, linkResolved
	}
	return string(cur.p), height, linkResolved
}

// linkPath is a '.'-relative path being resolved, component by component.
type linkPath struct {
	p    []byte // '/'-separated; empty: the root
	ends []int  // where each component ends in p
}

func (l *linkPath) push(c string) {
	if len(l.p) > 0 {
		l.p = append(l.p, '/')
	}
	l.p = append(l.p, c...)
	l.ends = append(l.ends, len(l.p))
}

// up removes the last component, or reports that there is none.
func (l *linkPath) up() bool {
	if len(l.ends) == 0 {
		return false
	}
	l.ends = l.ends[:len(l.ends)-1]
	if len(l.ends) == 0 {
		l.p = l.p[:0]
	} else {
		l.p = l.p[:l.ends[len(l.ends)-1]]
	}
	return true
}

// set replaces the path with p, clean and '.'-relative.
func (l *linkPath) set(p string) {
	l.p, l.ends = l.p[:0], l.ends[:0]
	if p == "." || p == "" {
		return
	}
	for c := range strings.SplitSeq(p, "/") {
		l.push(c)
	}
}
