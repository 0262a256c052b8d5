package gha

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tekton-cache/tekton-cache/internal/server"
)

// v1Error is GitHub's v1 error body; go-actions-cache reads typeKey and
// message (an AlreadyExists typeKey is os.ErrExist to it), the toolkit
// the message.
type v1Error struct {
	Message   string `json:"message"`
	TypeName  string `json:"typeName"`
	TypeKey   string `json:"typeKey"`
	ErrorCode int    `json:"errorCode"`
}

func (h *Handler) v1Fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	msg := oneLine(err)
	h.logf(r, status, msg)
	key := map[int]string{
		http.StatusConflict:              "ArtifactCacheItemAlreadyExistsException",
		http.StatusNotFound:              "ArtifactCacheNotFoundException",
		http.StatusRequestEntityTooLarge: "ArtifactCacheSizeExceededException",
		http.StatusBadRequest:            "ArgumentException",
		http.StatusUnauthorized:          "UnauthorizedRequestException",
		http.StatusForbidden:             "AccessDeniedException",
	}[status]
	if key == "" {
		key = "ArtifactCacheServiceException"
	}
	if status == http.StatusRequestEntityTooLarge {
		status = http.StatusBadRequest // what the toolkit reads as "over the size cap"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v1Error{Message: msg, TypeName: "GitHub.Services.ArtifactCache.WebApi." + key, TypeKey: key}) //nolint:errcheck // the client went away
}

// v1 runs f for a caller whose runtime token verifies and who may read
// (write: and write).
func (h *Handler) v1(write bool, f func(http.ResponseWriter, *http.Request, *server.Principal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := h.principal(r)
		if err != nil {
			h.v1Fail(w, r, http.StatusUnauthorized, err)
			return
		}
		if write && p.Write == "" || !write && len(p.Read) == 0 {
			h.v1Fail(w, r, http.StatusForbidden, fmt.Errorf("cache write denied: principal %q may not write", p.Name))
			return
		}
		f(w, r, p)
	})
}

// v1Lookup answers GET cache?keys=K1,K2&version=V: 200 with the entry, or
// 204 for a miss.
func (h *Handler) v1Lookup(w http.ResponseWriter, r *http.Request, p *server.Principal) {
	q := r.URL.Query()
	keys := strings.Split(q.Get("keys"), ",")
	if len(keys) > 10 {
		h.v1Fail(w, r, http.StatusBadRequest, fmt.Errorf("%w: %d keys (at most 10)", ErrInvalid, len(keys)))
		return
	}
	e, err := h.svc.Lookup(r.Context(), p.Read, keys, q.Get("version"))
	if err != nil {
		h.v1Fail(w, r, errStatus(r, err), err)
		return
	}
	h.o.ObserveLookup(p.Read[0], e != nil)
	if e == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	exp := h.o.Now().Add(h.o.URLTTL)
	writeJSON(w, http.StatusOK, map[string]any{
		"cacheKey":        e.Key,
		"scope":           e.Scope,
		"cacheVersion":    e.Version,
		"creationTime":    e.Created.UTC().Format(time.RFC3339),
		"archiveLocation": h.keys.downloadURL(h.baseURL(r), e.Archive.Digest.Hex(), e.Archive.Size, e.Ref, exp),
	})
}

// v1Reserve answers POST caches {key, version, cacheSize}: {cacheId}.
func (h *Handler) v1Reserve(w http.ResponseWriter, r *http.Request, p *server.Principal) {
	var req struct {
		Key       string `json:"key"`
		Version   string `json:"version"`
		CacheSize *int64 `json:"cacheSize"`
	}
	if err := decodeJSON(r, &req); err != nil {
		h.v1Fail(w, r, http.StatusBadRequest, err)
		return
	}
	if req.CacheSize != nil && h.svc.o.MaxSize > 0 && *req.CacheSize > h.svc.o.MaxSize {
		h.v1Fail(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("%w: %d bytes is over this server's largest entry, %d", ErrTooLarge, *req.CacheSize, h.svc.o.MaxSize))
		return
	}
	id, err := h.svc.Reserve(r.Context(), p.Write, req.Key, req.Version)
	if err != nil {
		h.v1Fail(w, r, errStatus(r, err), err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"cacheId": id})
}

func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: cache id %q", ErrInvalid, r.PathValue("id"))
	}
	return id, nil
}

// parseContentRange reads "bytes START-END/*" (END inclusive).
func parseContentRange(v string) (off, n int64, err error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	if ok {
		spec, _, ok = strings.Cut(spec, "/")
	}
	first, last, ok2 := strings.Cut(spec, "-")
	if ok && ok2 {
		a, err1 := strconv.ParseInt(first, 10, 64)
		b, err2 := strconv.ParseInt(last, 10, 64)
		if err1 == nil && err2 == nil && a >= 0 && b >= a {
			return a, b - a + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: Content-Range %q (want bytes START-END/*)", ErrInvalid, v)
}

// v1Chunk answers PATCH caches/ID with Content-Range: the chunk is stored
// as a part of the upload.
func (h *Handler) v1Chunk(w http.ResponseWriter, r *http.Request, p *server.Principal) {
	id, err := pathID(r)
	if err == nil {
		var off, n int64
		if off, n, err = parseContentRange(r.Header.Get("Content-Range")); err == nil {
			if r.ContentLength >= 0 && r.ContentLength != n {
				err = fmt.Errorf("%w: Content-Range has %d bytes, Content-Length %d", ErrInvalid, n, r.ContentLength)
			} else {
				err = h.svc.PutChunk(r.Context(), p.Write, id, off, n, r.Body)
			}
		}
	}
	if err != nil {
		h.v1Fail(w, r, errStatus(r, err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// v1Commit answers POST caches/ID {size}: the upload becomes the entry.
func (h *Handler) v1Commit(w http.ResponseWriter, r *http.Request, p *server.Principal) {
	id, err := pathID(r)
	var req struct {
		Size *int64 `json:"size"`
	}
	if err == nil {
		err = decodeJSON(r, &req)
	}
	if err == nil && req.Size == nil {
		err = fmt.Errorf("%w: the commit has no size", ErrInvalid)
	}
	if err == nil {
		_, err = h.svc.Commit(r.Context(), p.Write, id, *req.Size)
	}
	if err != nil {
		h.v1Fail(w, r, errStatus(r, err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
