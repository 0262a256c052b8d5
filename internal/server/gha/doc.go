// Package gha is cache-serve's second front end: the GitHub Actions cache
// protocol, version 1 (REST under /_apis/artifactcache/) and version 2
// (Twirp JSON RPCs under /twirp/github.actions.results.api.v1.CacheService/
// and the Azure Blob calls made on the signed URLs it hands out, under
// /gha/blob/), for BuildKit's type=gha cache (go-actions-cache) and
// @actions/cache. docs/HTTP.md has the wire, docs/GHA.md the user guide.
//
// Both front ends share one entry service (Service) over the server's
// store.Store:
//
//   - an archive is a content-addressed blob, hashed by the server as it
//     is assembled and checked against the size the client commits;
//   - (scope, version, key) is a ref in a namespace of its own beside the
//     native refs ("_gha.SCOPE.VERSIONHASH.KEY", keys.go), whose index is a
//     small record blob naming the key, the version and the archive: a ref
//     the GC ages, sizes and evicts like a native entry (its last use is
//     recorded on each download), and whose blobs it keeps;
//   - an upload is staged in the store, not on a replica's disk: each v1
//     chunk and v2 block is a blob with a ref of its own, so any replica
//     can take any part; the reservation is a ref too, and an unfinished
//     one expires (Service.Expire) with its parts.
//
// Every call carries a runtime token: an HS256 JWT this package mints
// (POST /v1/gha/token, in exchange for the server's own credentials) and
// verifies on every call; its "ac" claim holds the caller's trust scopes,
// so that a pull request's token restores main's entries and never
// writes them. The blob URLs carry no token: they are HMAC-signed, with
// an expiry.
package gha
