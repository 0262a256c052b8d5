package s3store

import (
	"testing"

	"github.com/tekton-cache/tekton-cache/internal/store/cloudblob"
)

// TestUploadConcurrency: an upload asks for no more parts in flight than
// follow its first (the transfer manager allocates Concurrency+1 buffers
// when a multipart upload starts, whatever its size).
func TestUploadConcurrency(t *testing.T) {
	const part = cloudblob.DefaultPartSize
	for _, c := range []struct {
		size int64
		want int
	}{{-1, cloudblob.DefaultConcurrency}, {part, 1}, {part + part/2, 1}, {2*part + 1, 2}, {5 * part, 4}, {100 * part, 4}} {
		if got := uploadConcurrency(c.size); got != c.want {
			t.Errorf("uploadConcurrency(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}
