package oci

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// pushClient is the HTTP client of blob uploads, authorised to push to the
// repository. It is made once (one ping of the registry, and a token when it
// asks for one: the bearer transport refreshes it on a 401); a failure to
// make it is not kept, so the next upload tries again.
type pushClient struct {
	mu sync.Mutex
	c  *http.Client
}

func (s *Store) pushHTTP(ctx context.Context) (*http.Client, error) {
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	if s.push.c != nil {
		return s.push.c, nil
	}
	rt, err := transport.NewWithContext(ctx, s.repo.Registry, s.auth, s.rt, []string{s.repo.Scope(transport.PushScope)})
	if err != nil {
		return nil, err
	}
	s.push.c = &http.Client{Transport: rt}
	return s.push.c, nil
}

// pushBlob uploads the blob d of size bytes, read from body, as the
// distribution spec's monolithic upload: a POST opens the upload, and one
// PUT with ?digest= carries every byte and commits it, which the registry
// does only when the bytes hash to d. Two requests, where a chunked upload
// (POST, PATCH, PUT) costs three round trips. A failed or cancelled PUT
// commits nothing: the registry drops the unfinished upload.
func (s *Store) pushBlob(ctx context.Context, d digest.Digest, size int64, body io.Reader) error {
	c, err := s.pushHTTP(ctx)
	if err != nil {
		return err
	}
	u := url.URL{Scheme: s.repo.Scheme(), Host: s.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/blobs/uploads/", s.repo.RepositoryStr())}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := send(c, req, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return fmt.Errorf("the registry opened an upload without a Location")
	}
	put, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return fmt.Errorf("the registry's upload location %q: %w", loc, err)
	}
	q := put.Query()
	q.Set("digest", d.String())
	put.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, put.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if resp, err = send(c, req, http.StatusCreated); err != nil {
		return err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		return fmt.Errorf("the registry committed the upload of %s as %s", d.Short(), got)
	}
	return nil
}

// send does req and checks that the answer is want (CheckError reads the
// body of an error answer); it then reads what is left of the body (at most
// 64 KiB, so that the connection can carry the next request) and closes it.
func send(c *http.Client, req *http.Request, want int) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	err = transport.CheckError(resp, want)
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // best effort: the connection is only reused
	resp.Body.Close()
	return resp, err
}
