// Command sitegridctl operates sitegrid and runs its local lab.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/sitegrid/sitegrid/internal/ctl"
)

func main() {
	if err := ctl.NewRootCommand().ExecuteContext(context.Background()); err != nil {
		// `lab exec`: the command's own exit status, as ssh would.
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() > 0 {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
