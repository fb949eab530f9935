// Command sitegridctl operates sitegrid and runs its local lab.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/sitegrid/sitegrid/internal/ctl"
)

func main() {
	if err := ctl.NewRootCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
