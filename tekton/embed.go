// Package tekton holds the cache-fetch and cache-upload StepActions, the
// YAML the release ships, embedded for `cache inject` and the resolver: an
// inlined cache step is built from the same spec, so the two never drift.
package tekton

import _ "embed"

// FetchStepAction is cache-fetch.yaml as shipped.
//
//go:embed cache-fetch.yaml
var FetchStepAction []byte

// UploadStepAction is cache-upload.yaml as shipped.
//
//go:embed cache-upload.yaml
var UploadStepAction []byte
