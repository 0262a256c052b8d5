package gha

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/tekton-cache/tekton-cache/internal/digest"
	"github.com/tekton-cache/tekton-cache/internal/server"
	"github.com/tekton-cache/tekton-cache/internal/store"
)

// twirpCodes are Twirp's error codes by HTTP status.
var twirpCodes = map[int]string{
	http.StatusBadRequest:            "invalid_argument",
	http.StatusUnauthorized:          "unauthenticated",
	http.StatusForbidden:             "permission_denied",
	http.StatusNotFound:              "not_found",
	http.StatusConflict:              "already_exists",
	http.StatusRequestEntityTooLarge: "resource_exhausted",
}

// twirpFail answers a Twirp error: {"code","msg"} (and "message", which
// go-actions-cache reads).
func (h *Handler) twirpFail(w http.ResponseWriter, r *http.Request, status int, err error) {
	msg := oneLine(err)
	h.logf(r, status, msg)
	code := twirpCodes[status]
	if code == "" {
		code, status = "unavailable", http.StatusServiceUnavailable
	}
	if code == "resource_exhausted" {
		status = http.StatusTooManyRequests // Twirp's status of the code
	}
	writeJSON(w, status, map[string]string{"code": code, "msg": msg, "message": msg})
}

// int64Field is a proto3 int64 in JSON: a string ("1234", as the toolkit
// sends it) or a number (go-actions-cache).
type int64Field int64

func (f *int64Field) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not an int64: %s", b)
	}
	*f = int64Field(n)
	return nil
}

// twirp answers the three RPCs of the cache service.
func (h *Handler) twirp(w http.ResponseWriter, r *http.Request) {
	p, err := h.principal(r)
	if err != nil {
		h.twirpFail(w, r, http.StatusUnauthorized, err)
		return
	}
	var req struct {
		Key         string     `json:"key"`
		RestoreKeys []string   `json:"restore_keys"`
		Version     string     `json:"version"`
		SizeBytes   int64Field `json:"size_bytes"`
	}
	if err := decodeJSON(r, &req); err != nil {
		h.twirpFail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx := r.Context()
	switch method := r.PathValue("method"); method {
	case "GetCacheEntryDownloadURL":
		if len(p.Read) == 0 {
			h.twirpFail(w, r, http.StatusForbidden, fmt.Errorf("cache read denied: principal %q may not read", p.Name))
			return
		}
		keys := []string{req.Key}
		for _, k := range req.RestoreKeys {
			if k != req.Key {
				keys = append(keys, k)
			}
		}
		if len(keys) > 10 {
			h.twirpFail(w, r, http.StatusBadRequest, fmt.Errorf("%w: %d keys (at most 10)", ErrInvalid, len(keys)))
			return
		}
		e, err := h.svc.Lookup(ctx, p.Read, keys, req.Version)
		if err != nil {
			h.twirpFail(w, r, errStatus(r, err), err)
			return
		}
		h.o.ObserveLookup(p.Read[0], e != nil)
		if e == nil {
			writeJSON(w, http.StatusOK, map[string]any{"ok": false})
			return
		}
		u := h.keys.downloadURL(h.baseURL(r), e.Archive.Digest.Hex(), e.Archive.Size, e.Ref, h.o.Now().Add(h.o.URLTTL))
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "signed_download_url": u, "matched_key": e.Key})
	case "CreateCacheEntry":
		if p.Write == "" {
			h.twirpFail(w, r, http.StatusForbidden, fmt.Errorf("cache write denied: principal %q may not write", p.Name))
			return
		}
		id, err := h.svc.Reserve(ctx, p.Write, req.Key, req.Version)
		if err != nil {
			h.twirpFail(w, r, errStatus(r, err), err)
			return
		}
		u := h.keys.uploadURL(h.baseURL(r), id, h.o.Now().Add(h.o.URLTTL))
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "signed_upload_url": u})
	case "FinalizeCacheEntryUpload":
		if p.Write == "" {
			h.twirpFail(w, r, http.StatusForbidden, fmt.Errorf("cache write denied: principal %q may not write", p.Name))
			return
		}
		e, err := h.svc.Finalize(ctx, p.Write, req.Key, req.Version, int64(req.SizeBytes))
		if err != nil {
			h.twirpFail(w, r, errStatus(r, err), err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "entry_id": strconv.FormatInt(idOf(e), 10)})
	default:
		h.twirpFail(w, r, http.StatusNotFound, fmt.Errorf("no such method %q", method))
	}
}

// idOf is an entry's id: the first 53 bits of its backing key's hash.
func idOf(e *Entry) int64 {
	d := digest.FromBytes([]byte(e.Ref)).Hex()
	n, _ := strconv.ParseInt(d[:13], 16, 64)
	return n | 1
}

// azureHeaders are what every blob answer carries.
func azureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("x-ms-request-id", requestID())
	h.Set("x-ms-version", "2025-01-05")
}

// azureFail answers an Azure Blob error: XML with a Code and a Message.
func (h *Handler) azureFail(w http.ResponseWriter, r *http.Request, status int, code string, err error) {
	msg := oneLine(err)
	h.logf(r, status, msg)
	azureHeaders(w)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-ms-error-code", code)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>%s</Code><Message>", code)
		xml.EscapeText(w, []byte(msg)) //nolint:errcheck // the client went away
		io.WriteString(w, "</Message></Error>")
	}
}

func azureCode(status int) string {
	switch status {
	case http.StatusNotFound:
		return "BlobNotFound"
	case http.StatusRequestEntityTooLarge:
		return "RequestBodyTooLarge"
	case http.StatusBadRequest:
		return "InvalidInput"
	case http.StatusConflict:
		return "BlobAlreadyExists"
	}
	return "InternalError"
}

// maxBlockList bounds a Put Block List body (50,000 ids of Azure's block
// blob, each at most 64 bytes in base64).
const maxBlockList = 8 << 20

// blobPut answers the uploads on a signed upload URL: Put Blob, Put Block
// (comp=block) and Put Block List (comp=blocklist), 201 each.
func (h *Handler) blobPut(w http.ResponseWriter, r *http.Request) {
	if !h.keys.check(r.URL.Path, r.URL.Query(), h.o.Now()) {
		h.azureFail(w, r, http.StatusForbidden, "AuthenticationFailed", errors.New("the signed upload URL is invalid or expired"))
		return
	}
	id, err := pathID(r)
	if err != nil {
		h.azureFail(w, r, http.StatusBadRequest, "InvalidUri", err)
		return
	}
	q := r.URL.Query()
	comp := q.Get("comp")
	if comp != "blocklist" && r.ContentLength < 0 {
		h.azureFail(w, r, http.StatusLengthRequired, "MissingContentLengthHeader", errors.New("a Content-Length is needed"))
		return
	}
	ctx := r.Context()
	switch comp {
	case "":
		err = h.svc.PutWhole(ctx, id, r.ContentLength, r.Body)
	case "block":
		err = h.svc.PutBlock(ctx, id, q.Get("blockid"), r.ContentLength, r.Body)
	case "blocklist":
		var ids []string
		if ids, err = parseBlockList(io.LimitReader(r.Body, maxBlockList)); err == nil {
			err = h.svc.CommitBlocks(ctx, id, ids)
		}
	default:
		err = fmt.Errorf("%w: comp=%s is not served here", ErrInvalid, comp)
	}
	if err != nil {
		status := errStatus(r, err)
		h.azureFail(w, r, status, azureCode(status), err)
		return
	}
	azureHeaders(w)
	w.Header().Set("ETag", `"`+requestID()+`"`)
	w.Header().Set("Last-Modified", h.o.Now().UTC().Format(http.TimeFormat))
	if comp == "" || comp == "blocklist" {
		w.Header().Set("x-ms-request-server-encrypted", "false")
	}
	w.WriteHeader(http.StatusCreated)
}

// parseBlockList reads a Put Block List body: the block ids in the order
// listed, whichever list (Latest, Uncommitted, Committed) each is in.
func parseBlockList(r io.Reader) ([]string, error) {
	dec := xml.NewDecoder(r)
	var ids []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the block list is not XML: %v", ErrInvalid, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 && t.Name.Local != "BlockList" {
				return nil, fmt.Errorf("%w: the block list's root is %s", ErrInvalid, t.Name.Local)
			}
			if depth == 2 {
				var id string
				if err := dec.DecodeElement(&id, &t); err != nil {
					return nil, fmt.Errorf("%w: the block list: %v", ErrInvalid, err)
				}
				ids = append(ids, strings.TrimSpace(id))
				depth--
			}
		case xml.EndElement:
			depth--
		}
	}
	if len(ids) == 0 || len(ids) > 50_000 {
		return nil, fmt.Errorf("%w: a block list of %d blocks (1 to 50,000)", ErrInvalid, len(ids))
	}
	return ids, nil
}

// blobGet answers a signed download URL: the archive, whole or from a
// range given by x-ms-range (Azure's SDKs) or Range (v1 clients), 206 with
// Content-Range for a range.
func (h *Handler) blobGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !h.keys.check(r.URL.Path, q, h.o.Now(), qKey, qSize) {
		h.azureFail(w, r, http.StatusForbidden, "AuthenticationFailed", errors.New("the signed download URL is invalid or expired: look the entry up again"))
		return
	}
	d := digest.Digest(digest.Algorithm + ":" + r.PathValue("hex"))
	size, err := strconv.ParseInt(q.Get(qSize), 10, 64)
	if d.Validate() != nil || err != nil || size < 0 || !IsEntry(q.Get(qKey)) {
		h.azureFail(w, r, http.StatusBadRequest, "InvalidUri", errors.New("a signed URL this server did not make"))
		return
	}
	off, end := int64(0), size
	rg := r.Header.Get("x-ms-range")
	if rg == "" {
		rg = r.Header.Get("Range")
	}
	partial := false
	if rg != "" && !(size == 0 && strings.TrimSpace(rg) == "bytes=0-") {
		var ok bool
		if off, end, ok = server.ParseRange(rg, size); !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			h.azureFail(w, r, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", fmt.Errorf("range %q of a blob of %d bytes", rg, size))
			return
		}
		partial = true
	}
	var rc io.ReadCloser
	if r.Method != http.MethodHead {
		if rc, err = h.svc.Open(r.Context(), d, off); err != nil {
			status := errStatus(r, err)
			if errors.Is(err, store.ErrNotFound) {
				status = http.StatusNotFound
			}
			h.azureFail(w, r, status, azureCode(status), err)
			return
		}
		defer rc.Close()
	}
	azureHeaders(w)
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(end-off, 10))
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("ETag", `"`+d.Hex()+`"`)
	hd.Set("x-ms-blob-type", "BlockBlob")
	status := http.StatusOK
	if partial {
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end-1, size))
		status = http.StatusPartialContent
	}
	if rc == nil {
		w.WriteHeader(status)
		return
	}
	// The use is recorded before the bytes go (at most hourly per entry,
	// server.Options.RecordUseEvery): a GC that runs once the client has
	// read them sees it.
	h.o.RecordUse(r.Context(), q.Get(qKey))
	w.WriteHeader(status)
	// A whole archive is checked against its digest as it goes, its last
	// byte held back until the check passes: a store that gives other
	// bytes cuts the connection, so a client that checks nothing
	// (@actions/cache) never completes a download of wrong bytes. A range
	// is checked by what reads it (BuildKit checks its blobs' digests).
	// A short read cuts the connection too, never a short 200.
	var n int64
	if off == 0 && end == size {
		n, err = copyVerified(w, io.LimitReader(rc, size), d)
	} else {
		n, err = io.Copy(w, io.LimitReader(rc, end-off))
	}
	if err != nil || n != end-off {
		h.o.Logf("warning: gha: %s: sent %d of %d bytes: %v", r.URL.Path, n, end-off, err)
		panic(http.ErrAbortHandler)
	}
}

// copyVerified copies r to w, holding back the last byte until all of r
// hashes to d: on another digest, w never gets that byte.
func copyVerified(w io.Writer, r io.Reader, d digest.Digest) (int64, error) {
	hb := &holdBack{w: w, h: digest.NewDigester()}
	if _, err := io.Copy(hb, r); err != nil {
		return hb.n, err
	}
	if got := hb.h.Digest(); got != d {
		return hb.n, fmt.Errorf("the store's bytes are %s, not %s: not sent whole", got.Short(), d.Short())
	}
	if hb.held {
		if _, err := w.Write([]byte{hb.last}); err != nil {
			return hb.n, err
		}
		hb.n++
	}
	return hb.n, nil
}

// holdBack writes what it is given to w but for its last byte, and hashes
// all of it.
type holdBack struct {
	w    io.Writer
	h    *digest.Digester
	last byte
	held bool
	n    int64 // bytes written to w
}

func (hb *holdBack) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	hb.h.Write(p)
	if hb.held {
		if _, err := hb.w.Write([]byte{hb.last}); err != nil {
			return 0, err
		}
		hb.n++
	}
	m, err := hb.w.Write(p[:len(p)-1])
	hb.n += int64(m)
	if err != nil {
		return m, err
	}
	hb.last, hb.held = p[len(p)-1], true
	return len(p), nil
}
