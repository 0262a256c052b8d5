package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	fastjson "github.com/segmentio/encoding/json"
)

// errNotCanonical says that an index's JSON is not in the shape our
// writer gives it ("format" first, entries an array of objects, "entries"
// once): DecodeIndex then reads it whole, as before streaming.
var errNotCanonical = errors.New("not the canonical index layout")

// errIndexSize is the error of a limitReader past its limit.
var errIndexSize = errors.New("index past its size limit")

// limitReader reads r, failing with errIndexSize past n bytes.
type limitReader struct {
	r io.Reader
	n int64 // bytes left
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, errIndexSize
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	if l.n -= int64(n); l.n < 0 {
		return n, errIndexSize
	}
	return n, err
}

// jsonStream scans JSON text from a reader through a buffer that grows
// only to the largest value it is asked for (an entry: a few hundred
// bytes), so that an index is parsed without its text held whole.
type jsonStream struct {
	r   io.Reader
	buf []byte
	pos int // buf[pos:] is unread
	eof bool
	err error // the reader's error, other than io.EOF
}

// fill reads more into the buffer, keeping buf[keep:]; it reports whether
// anything was added.
func (s *jsonStream) fill(keep int) bool {
	if s.eof || s.err != nil {
		return false
	}
	n := copy(s.buf, s.buf[keep:])
	s.buf, s.pos = s.buf[:n], s.pos-keep
	if len(s.buf) == cap(s.buf) {
		s.buf = append(s.buf, make([]byte, len(s.buf))...)[:n]
	}
	for {
		m, err := s.r.Read(s.buf[n:cap(s.buf)])
		s.buf = s.buf[:n+m]
		if errors.Is(err, io.EOF) {
			s.eof = true
		} else if err != nil {
			s.err = err
		}
		if m > 0 || err != nil {
			return m > 0
		}
	}
}

// peek skips white space and returns the next byte, 0 at the end.
func (s *jsonStream) peek() byte {
	for {
		for s.pos < len(s.buf) {
			switch c := s.buf[s.pos]; c {
			case ' ', '\t', '\r', '\n':
				s.pos++
			default:
				return c
			}
		}
		if !s.fill(s.pos) {
			return 0
		}
	}
}

// expect consumes c, the next byte after white space, or fails.
func (s *jsonStream) expect(c byte) error {
	if s.peek() != c {
		return s.syntax(fmt.Sprintf("want %q", c))
	}
	s.pos++
	return nil
}

func (s *jsonStream) syntax(what string) error {
	if s.err != nil {
		return s.err
	}
	return fmt.Errorf("invalid JSON: %s", what)
}

// stringEnd returns the position in b of the quote that ends a JSON
// string whose text b starts, or -1 when b ends first; esc then says that
// b ends in the middle of an escape (its last byte a backslash that
// escapes the next). It jumps from quote to backslash with IndexByte, not
// a byte at a time: paths and digests are most of an index's text.
func stringEnd(b []byte) (end int, esc bool) {
	i := 0
	for {
		span := b[i:]
		q := bytes.IndexByte(span, '"')
		if q >= 0 {
			span = span[:q]
		}
		k := bytes.IndexByte(span, '\\')
		if k < 0 {
			if q < 0 {
				return -1, false
			}
			return i + q, false
		}
		if i += k + 2; i > len(b) {
			return -1, true
		}
	}
}

// value returns the raw text of the next JSON value (scanned for its end
// only: the caller parses it), valid until the next call.
func (s *jsonStream) value() ([]byte, error) {
	if s.peek() == 0 {
		return nil, s.syntax("unexpected end")
	}
	start, i := s.pos, s.pos
	depth, inString, escaped := 0, false, false
	for {
		for ; i < len(s.buf); i++ {
			c := s.buf[i]
			switch {
			case escaped:
				escaped = false
			case inString:
				end, esc := stringEnd(s.buf[i:])
				if end < 0 {
					escaped, i = esc, len(s.buf)-1
					continue
				}
				i += end
				inString = false
				if depth == 0 {
					s.pos = i + 1
					return s.buf[start:s.pos], nil
				}
			case c == '"':
				inString = true
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				if depth == 0 { // a scalar's end
					s.pos = i
					return s.buf[start:i], nil
				}
				if depth--; depth == 0 {
					s.pos = i + 1
					return s.buf[start:s.pos], nil
				}
			case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n'):
				s.pos = i
				return s.buf[start:i], nil
			}
		}
		off := i - start
		if !s.fill(start) {
			if depth == 0 && !inString && off > 0 { // a scalar at the end
				s.pos = len(s.buf)
				return s.buf[:s.pos], nil
			}
			return nil, s.syntax("unexpected end")
		}
		start, i = 0, off
	}
}

// decodeIndexStream parses a version 1 index in the layout our writer
// gives it from r, an entry at a time: only the entries decoded are held,
// never the text, in a slice of capacity size (the entries expected). It
// refuses more than maxEntries entries as soon as it has read one more.
// Anything else than that layout gives errNotCanonical
// (the caller then reads the index whole); its other errors are final.
//
// visit, when set, is given each entry and its position as it is
// parsed, in a variable reused for the next one, and no entry is kept
// (the Index returned has none).
func decodeIndexStream(r io.Reader, maxEntries int64, size int, visit func(int, *Entry) error) (*Index, error) {
	s := &jsonStream{r: r, buf: make([]byte, 0, 64<<10)}
	if err := s.expect('{'); err != nil {
		return nil, err
	}
	if k, err := s.value(); err != nil || string(k) != `"format"` {
		return nil, errNotCanonical
	}
	if err := s.expect(':'); err != nil {
		return nil, err
	}
	v, err := s.value()
	if err != nil {
		return nil, err
	}
	version, err := strconv.Atoi(string(v))
	if err != nil {
		return nil, errNotCanonical
	}
	if version != 1 {
		return nil, errNotCanonical // not ours to stream: the decoders of indexDecoders say
	}
	// The other members but the entries, parsed together at the end.
	head := []byte(`{"format":1`)
	x := &Index{}
	seen := false
	for {
		switch s.peek() {
		case '}':
			s.pos++
		case ',':
			s.pos++
			k, err := s.value()
			if err != nil {
				return nil, err
			}
			if len(k) == 0 || k[0] != '"' {
				return nil, s.syntax("want a member name")
			}
			key := string(k)
			if err := s.expect(':'); err != nil {
				return nil, err
			}
			if key == `"entries"` {
				if seen {
					return nil, errNotCanonical
				}
				seen = true
				if x.Entries, err = s.entries(maxEntries, size, visit); err != nil {
					return nil, err
				}
				continue
			}
			v, err := s.value()
			if err != nil {
				return nil, err
			}
			head = append(append(append(append(head, ','), key...), ':'), v...)
			continue
		default:
			return nil, s.syntax("want ',' or '}'")
		}
		break
	}
	if s.peek() != 0 {
		return nil, errors.New("data after the index")
	}
	if s.err != nil {
		return nil, s.err
	}
	head = append(head, '}')
	entries := x.Entries
	x.Entries = nil
	if _, err := fastjson.Parse(head, x, fastjson.DisallowUnknownFields); err != nil {
		return nil, err
	}
	// An escaped member name ("\u0065ntries") may have set what the
	// stream set: read the whole index instead, by encoding/json's rules.
	if x.Entries != nil || x.Format != 1 {
		return nil, errNotCanonical
	}
	x.Entries = entries
	return x, nil
}

// entries parses the entries member: null, or an array of objects.
// With visit set, each entry is parsed into one variable and given to
// visit, and none is kept.
func (s *jsonStream) entries(maxEntries int64, size int, visit func(int, *Entry) error) ([]Entry, error) {
	switch s.peek() {
	case 'n':
		v, err := s.value()
		if err != nil {
			return nil, err
		}
		if string(v) != "null" {
			return nil, s.syntax("want null")
		}
		return nil, nil
	case '[':
		s.pos++
	default:
		return nil, errNotCanonical
	}
	if visit != nil {
		size = 0
	}
	entries := make([]Entry, 0, size)
	var one Entry
	// Visited entries are not kept: their strings may alias the stream's
	// buffer (VisitIndex says so), which spares a path and a digest
	// allocated an entry.
	flags := fastjson.DisallowUnknownFields
	if visit != nil {
		flags |= fastjson.DontCopyString
	}
	n := int64(0)
	if s.peek() == ']' {
		s.pos++
		return entries, nil
	}
	for {
		if s.peek() != '{' {
			return nil, errNotCanonical
		}
		e := &one
		if visit == nil {
			entries = append(entries, Entry{})
			e = &entries[len(entries)-1]
		} else {
			one = Entry{}
		}
		// Our writer's entries are read by parseEntryJSON; any other
		// text, and an entry the buffer does not hold whole yet, by the
		// reflective decoder.
		if len(s.buf)-s.pos < maxFastEntry {
			s.fill(s.pos)
		}
		if m := parseEntryJSON(s.buf[s.pos:], e, visit != nil); m > 0 {
			s.pos += m
		} else {
			*e = Entry{}
			v, err := s.value()
			if err != nil {
				return nil, err
			}
			if rest, err := fastjson.Parse(v, e, flags); err != nil {
				return nil, err
			} else if len(bytes.TrimSpace(rest)) > 0 {
				return nil, s.syntax("data after an entry")
			}
		}
		if n >= maxEntries {
			return nil, tooManyEntries(fmt.Sprintf("more than %d entries", maxEntries), maxEntries)
		}
		n++
		if visit != nil {
			if err := visit(int(n-1), e); err != nil {
				return nil, err
			}
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return entries, nil
		default:
			return nil, s.syntax("want ',' or ']'")
		}
	}
}

// maxFastEntry is the text parseEntryJSON is given at least, unless the
// stream ends first: most entries are a few hundred bytes, and a longer
// one is read by the reflective decoder.
const maxFastEntry = 4 << 10

// maxStreamWindow bounds the window of an index's zstd stream: our
// writer's is at most 8 MiB.
const maxStreamWindow = 32 << 20
