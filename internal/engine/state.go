package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/tekton-cache/tekton-cache/internal/archive"
	"github.com/tekton-cache/tekton-cache/internal/digest"
)

// state is what restore leaves in each folder (archive.StateFileName) so
// that a later save, in another step's container, knows what is on disk
// without reading it: the index it restored.
type state struct {
	Format   int           `json:"format"`
	Key      string        `json:"key"`
	Store    string        `json:"store,omitempty"`
	Restored time.Time     `json:"restored"`
	Index    digest.Digest `json:"index"`
	Blob     []byte        `json:"index_blob"`
}

func writeState(folders []string, st *state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for _, f := range folders {
		p := filepath.Join(f, archive.StateFileName)
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return fmt.Errorf("writing restore state: %w", err)
		}
		if err := os.Rename(tmp, p); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("writing restore state: %w", err)
		}
	}
	return nil
}

// readState returns the index restored into folders, or nil when there is
// none (or it is stale or unreadable: a save then reads every file).
func readState(folders []string) (*state, *archive.Index) {
	if len(folders) == 0 {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(folders[0], archive.StateFileName))
	if err != nil {
		return nil, nil
	}
	var st state
	if fastjson.Unmarshal(data, &st) != nil || st.Format != archive.FormatVersion || digest.FromBytes(st.Blob) != st.Index {
		return nil, nil
	}
	x, err := archive.DecodeIndex(st.Blob)
	if err != nil || len(x.Roots) != len(folders) {
		return nil, nil
	}
	return &st, x
}

func removeState(folders []string) {
	for _, f := range folders {
		if err := os.Remove(filepath.Join(f, archive.StateFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
	}
}
