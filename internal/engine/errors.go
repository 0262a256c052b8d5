package engine

import "errors"

// ErrConfig is wrapped by errors that come from how the engine was asked to
// work (a refused folder list, say), not from the store or the workspace: the
// command line reports them as misconfiguration (exit 2).
var ErrConfig = errors.New("invalid configuration")
