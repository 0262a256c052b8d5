package cli

import (
	"time"

	"github.com/spf13/pflag"
)

// ApplyEnv sets every flag of fs not given on the command line from its
// CACHE_* variable, as the cache command's flags are: for the module's
// other commands (cache-serve).
func ApplyEnv(fs *pflag.FlagSet) error { return applyEnv(fs) }

// SizeValue is a byte-size flag ("4GiB", "500MB", "1024") stored in n, as
// prune's --max-size.
func SizeValue(n *int64) pflag.Value { return sizeValue{n} }

// AgeValue is a duration flag that also takes days and weeks ("7d", "2w",
// "1d12h") stored in d, as prune's --older-than.
func AgeValue(d *time.Duration) pflag.Value { return ageValue{d} }
