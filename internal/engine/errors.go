package engine

import (
	"errors"
	"fmt"
)

// ErrConfig is wrapped by errors of a configuration that can never work
// (the CLI exits 2 on them): not a transient failure of the store.
var ErrConfig = errors.New("invalid configuration")

// ErrNoFolders is wrapped by the error of a Save or Restore given no
// folder (and wraps ErrConfig). The CLI says which flag to pass.
var ErrNoFolders = fmt.Errorf("%w: no folder", ErrConfig)

// ErrEmptyFolder is wrapped by the error of a folder given as an empty
// name, as an unset variable leaves it (and wraps ErrConfig).
var ErrEmptyFolder = fmt.Errorf("%w: empty folder name", ErrConfig)
