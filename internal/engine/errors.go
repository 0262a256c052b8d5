package engine

import "errors"

// ErrConfig is wrapped by errors of a configuration that can never work
// (the CLI exits 2 on them): not a transient failure of the store.
var ErrConfig = errors.New("invalid configuration")
