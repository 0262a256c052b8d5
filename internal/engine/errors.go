package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrConfig is wrapped by errors of a configuration that can never work
// (the CLI exits 2 on them): not a transient failure of the store.
var ErrConfig = errors.New("invalid configuration")

// checkFolders refuses folder lists that cannot be saved or restored
// faithfully: an empty name (an unset variable), the same folder twice, or a
// folder inside another (its files would be in two roots, and a restore of
// one would overwrite the other). It returns the absolute paths.
func checkFolders(folders []string) ([]string, error) {
	abs := make([]string, len(folders))
	for i, f := range folders {
		if strings.TrimSpace(f) == "" {
			return nil, fmt.Errorf("%w: folder %d is empty (an unset variable?): pass a directory to --folder", ErrConfig, i+1)
		}
		a, err := filepath.Abs(f)
		if err != nil {
			return nil, fmt.Errorf("%w: folder %q: %v", ErrConfig, f, err)
		}
		abs[i] = a
	}
	for i, a := range abs {
		for j, b := range abs {
			if i == j {
				continue
			}
			if a == b {
				return nil, fmt.Errorf("%w: folder %s is given twice: pass each folder once", ErrConfig, folders[i])
			}
			if strings.HasPrefix(b, a+string(filepath.Separator)) || a == string(filepath.Separator) {
				return nil, fmt.Errorf("%w: folder %s is inside folder %s: pass only the outer one, or folders side by side", ErrConfig, folders[j], folders[i])
			}
		}
	}
	return abs, nil
}
