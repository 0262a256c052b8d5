# tekton-cache. `make help` lists the targets.
SHELL := bash
GO ?= go
BIN := bin/cache
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/tekton-cache/tekton-cache/internal/cli.Version=$(VERSION)
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
# In CI a test whose server is missing fails instead of skipping.
ifdef CI
export CACHE_TEST_DISALLOW_SKIP := 1
endif

.PHONY: help build test test-tekton test-resolver test-short demo bench lint fuzz tools image resolver-image release clean e2e-buildkit

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

build: ## Build bin/cache
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/cache

tools: ## Install the servers the tests start (registry, MinIO, fake-gcs-server, Azurite) when missing
	@for s in hack/install-*-tools.sh; do [ -f "$$s" ] && bash "$$s"; done; true

test: tools ## Run every test (with -race) against real servers on 127.0.0.1, then the Tekton and resolver modules' and BuildKit v0.32's go-actions-cache (test/ghacompat)
	$(GO) test -race -count=1 -timeout 30m ./...
	cd test/tekton && $(GO) test -race -count=1 -timeout 30m ./...
	cd resolver && $(GO) test -race -count=1 -timeout 10m ./...
	cd test/ghacompat && $(GO) test -race -count=1 -timeout 10m ./...

test-tekton: tools ## Tekton YAML validation, the local TaskRun harness and the image test (module test/tekton)
	cd test/tekton && $(GO) test -race -count=1 -timeout 30m ./...

test-resolver: ## The cache resolver's tests (module resolver: Resolve, the framework's reconcile harness)
	cd resolver && $(GO) test -race -count=1 -timeout 10m ./...

test-short: ## Unit tests only, no servers
	$(GO) test -race -short ./...

demo: build ## Save a real directory to a local file:// store, restore it elsewhere, show what happened
	@bash hack/demo.sh

e2e-buildkit: ## Opt-in, as root: a real BuildKit exports and imports its cache through cache-serve (GHA v1 and v2; hack/e2e-buildkit.sh)
	@bash hack/e2e-buildkit.sh

bench: build ## Benchmarks: save/restore vs tar|zstd on real caches (see docs/BENCHMARKS.md), then each store's operations
	@bash hack/bench.sh
	$(GO) test -run '^$$' -bench '^BenchmarkConformance$$' -benchtime 20x ./internal/store/...

lint: ## gofmt, go vet (and golangci-lint when installed)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	cd test/tekton && $(GO) vet ./... && $(GO) mod tidy -diff
	cd resolver && $(GO) vet ./... && $(GO) mod tidy -diff
	cd test/ghacompat && $(GO) vet ./... && $(GO) mod tidy -diff
	@if command -v golangci-lint >/dev/null; then golangci-lint run; fi

fuzz: ## Run each fuzz target for 30s
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeIndex$$' -fuzztime 30s ./internal/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzExtract$$' -fuzztime 30s ./internal/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzPackReader$$' -fuzztime 30s ./internal/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzEntryJSON$$' -fuzztime 30s ./internal/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzParseEntryJSON$$' -fuzztime 30s ./internal/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzReadState$$' -fuzztime 30s ./internal/engine/
	$(GO) test -run '^$$' -fuzz '^FuzzModel$$' -fuzztime 30s ./internal/engine/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRef$$' -fuzztime 30s ./internal/store/
	$(GO) test -run '^$$' -fuzz '^FuzzKeys$$' -fuzztime 30s ./internal/store/
	$(GO) test -run '^$$' -fuzz '^FuzzSplitKey$$' -fuzztime 30s ./internal/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime 30s ./internal/store/oci/

image: ## Build the image with ko and push it to $KO_DOCKER_REPO
	@test -n "$$KO_DOCKER_REPO" || { echo "set KO_DOCKER_REPO, e.g. registry.example.com/tekton-cache"; exit 1; }
	VERSION=$(VERSION) ko build --base-import-paths ./cmd/cache

resolver-image: ## Build the cache resolver's image with ko and push it to $$KO_DOCKER_REPO (not run in CI)
	@test -n "$$KO_DOCKER_REPO" || { echo "set KO_DOCKER_REPO, e.g. registry.example.com/tekton-cache"; exit 1; }
	cd resolver && VERSION=$(VERSION) ko build --base-import-paths ./cmd/cache-resolver

release: ## Push the image and render dist/: cache-fetch.yaml, cache-upload.yaml (one StepAction each) and release.yaml, pinned by digest
	@test -n "$$KO_DOCKER_REPO" || { echo "set KO_DOCKER_REPO"; exit 1; }
	VERSION=$(VERSION) sh hack/release.sh dist

clean: ## Remove build outputs and demo data
	rm -rf bin demo .bench
