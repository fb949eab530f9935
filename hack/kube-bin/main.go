// Command kube-bin builds (or finds) the pinned Kubernetes, etcd and kwok
// binaries and prints the folder that holds them. `make kube-bin` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sitegrid/sitegrid/internal/kubebin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	set, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-bin:", err)
		os.Exit(1)
	}
	fmt.Println(set.Dir)
}
