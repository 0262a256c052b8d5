// Package oci is the oci:// store: cache entries kept in a repository of an
// OCI registry (distribution, Harbor, Quay, GHCR, ECR, GAR, ACR ...), built on
// github.com/google/go-containerregistry.
//
// # URLs
//
//	oci://registry[:port]/repo/path
//
// The URL names a repository, never a tag: the key is passed separately
// (store.SplitKey cuts "oci://registry/repo:KEY" in two). Registries on
// localhost, 127.0.0.0/8, ::1 and private (RFC 1918) addresses are tried over
// HTTPS, then plain HTTP; store.Options.Insecure allows plain HTTP and
// unverified TLS for any registry.
//
// # Layout
//
// Blobs are the repository's blobs (HEAD, GET, and the chunked upload of the
// distribution spec, committed with the digest so the registry checks it).
// A ref is a tag whose manifest is an OCI image manifest:
//
//	mediaType     application/vnd.oci.image.manifest.v1+json
//	artifactType  application/vnd.tekton-cache.entry.v1     (format.ArtifactType)
//	config        the index blob, format.IndexMediaType
//	layers        the packs, application/vnd.oci.image.layer.v1.tar+zstd
//	annotations   dev.tekton-cache.key, dev.tekton-cache.format,
//	              dev.tekton-cache.tool, dev.tekton-cache.platform,
//	              org.opencontainers.image.created (RFC 3339, nanoseconds)
//
// The reserved tag TimesTag ("_tekton-cache.times") holds the times
// manifest: each key's Created, updated by every save, so that a restore
// key reads the newest entries first (store.RefLister) instead of every
// entry's manifest. It is a hint for order only.
//
// Packs are zstd-compressed tar streams, so the registry deduplicates them
// like any layer and tools such as `crane export` can read them. See
// docs/OCI.md for the details and the cost of restore keys.
//
// # Credentials
//
// The docker config chain of go-containerregistry's authn.DefaultKeychain
// ($DOCKER_CONFIG/config.json, ~/.docker/config.json, credential helpers,
// podman's auth.json), plus the habit of openshift-pipelines/tekton-caches:
// DOCKER_CONFIG may name a directory holding a mounted kubernetes.io/dockerconfigjson
// secret (a file named .dockerconfigjson) instead of config.json, or the file
// itself. Bearer-token and basic auth are go-containerregistry's. No error
// ever contains a secret.
//
// # Errors
//
// Every error is one line that names the store and the cause. Missing tags,
// blobs and repositories wrap store.ErrNotFound. A tag that holds something
// other than a tekton-cache entry (the reference tool's single-layer gzip
// image, a multi-platform image, another tool's artifact) gives an error
// wrapping ErrForeignEntry, and store.ErrNotFound too: there is no entry of
// ours under that key, so a restore misses and says why, and a save replaces
// the tag.
package oci
