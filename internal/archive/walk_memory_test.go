package archive

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestWalkAllocation: a walk of many small directories (the shape of a
// node_modules or of a 600,000-file cache) allocates each entry about
// twice, once in its directory's chunk and once in the index, not over
// and over in one slice grown directory by directory (Go grows a large
// slice by a quarter: about five copies, and two held at each growth).
func TestWalkAllocation(t *testing.T) {
	if raceEnabled {
		t.Skip("counts allocated bytes, which the race detector changes")
	}
	dir := t.TempDir()
	for d := range 800 {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", d))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("component-handler-%05d.generated.spec.ts", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var x *Index
	per := allocated(16_801, func() {
		var err error
		if x, _, err = Walk([]string{dir}); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("walking %d entries allocated %.0f B an entry", len(x.Entries), per)
	if len(x.Entries) != 16_800 {
		t.Fatalf("walked %d entries, want 16,800", len(x.Entries))
	}
	// 943 when the entries were appended to one growing slice; 527 when
	// the chunks held entries and identities rather than walked records.
	if per > 490 {
		t.Errorf("walking allocated %.0f B an entry, want at most 490: the entries are copied again and again, or the chunks hold more than walked records", per)
	}
}
