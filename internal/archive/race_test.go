//go:build race

package archive

// raceEnabled: the race detector allocates on its own, so tests that
// count allocated bytes do not run under it.
const raceEnabled = true
