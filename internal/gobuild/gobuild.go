// Package gobuild builds sitegrid binaries as `make build` does, for the
// lab and for the tests and benchmarks that run the real binaries.
package gobuild

import (
	"context"
	"os"
	"os/exec"
)

// Command is the command that builds pkgs into out: static, so no C
// library is mapped into every hub (1.5 MiB of its resident memory,
// docs/hub.md). out is a file, or with several packages a folder ending in
// "/". Run it in the repository's root.
func Command(ctx context.Context, out string, pkgs ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd
}
