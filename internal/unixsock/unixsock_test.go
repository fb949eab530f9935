package unixsock

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListen: the socket is its owner's only, replaces a stale one, and a
// path too long for a socket is a clear error.
func TestListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "s.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil { // left by a killed run
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket of mode 0600", fi.Mode())
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("x", MaxPath))
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "use a shorter --workdir") {
		t.Errorf("Listen of a %d-byte path: %v, want a clear refusal", len(long), err)
	}
}
