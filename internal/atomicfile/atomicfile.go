// Package atomicfile writes files so that a reader, or the next start after
// a crash, finds the old content or the new, never a part of it.
package atomicfile

import (
	"encoding/json"
	"os"
)

// Write writes data to path through a temporary file beside it, renamed
// over path.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteJSON is Write of v in JSON (indented, for files people read).
func WriteJSON(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return Write(path, data, perm)
}
