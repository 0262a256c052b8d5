// Package server is the native HTTP API of a cache store (docs/HTTP.md):
// an http.Handler over a store.Store that mirrors the object layout of
// docs/FORMAT.md, for `cache-serve` and its client, store/httpstore.
//
//	HEAD|GET /v1/blobs/sha256/<hex>   a blob (GET takes a Range)
//	PUT      /v1/blobs/sha256/<hex>   a blob, kept only if its bytes hash to <hex>
//	POST     /v1/blobs:missing        which of these blobs the store lacks
//	GET|PUT  /v1/refs/<key>           a ref, in the caller's scopes
//	GET      /v1/refs?prefix=P        the keys under P, with their times
//	GET      /healthz
//	GET      /                        the status page (Options.StatusPage; status.go)
//
// Every request is made by a Principal (an Authenticator's answer, or the
// anonymous one when the options allow it) that writes refs into one scope
// and reads them from an ordered list of scopes. Scopes are prefixes of the
// backing store's keys (see ScopedKey), so no key of one scope is ever a
// key of another. Blobs are shared by every scope: the server hashes every
// blob it is given and keeps it only under its true digest.
//
// It imports the store interface only, never a backend: the caller opens
// the backing store (any URL) and hands it over.
package server
