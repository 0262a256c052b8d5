#!/usr/bin/env bash
# make bench: builds the corpora once (kept in .bench/), then measures every
# scenario side by side with its floor, then the cache-serve load test
# (-serve-clients, -serve-mb; -serve-clients 0 leaves it out). Needs zstd,
# tar, node and npm (the node corpora, installed from the npm registry the
# first time), and for the OCI store the `registry` and `crane` binaries
# (make tools).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
CGO_ENABLED=0 go build -trimpath -o bin/cache-serve ./cmd/cache-serve
go run ./hack/bench -out .bench/results.md "$@"
# In-process benchmarks with their floors (archive/tar + zstd on the same tree).
go test -run "^$" -bench . -benchtime 3x ./internal/engine/
