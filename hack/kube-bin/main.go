// Command kube-bin builds (or finds) the pinned Kubernetes, etcd and kwok
// binaries and prints the folder that holds them; -kit superedge does the
// same for SuperEdge's (the migration tests), -kit metrics-server for
// metrics-server (the lab's `kubectl top`). `make kube-bin` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sitegrid/sitegrid/internal/kubebin"
)

func main() {
	kitName := flag.String("kit", "kubernetes", "What to build: kubernetes (Kubernetes, etcd, kwok), superedge or metrics-server.")
	flag.Parse()
	kits := map[string]kubebin.Kit{"kubernetes": {}, "superedge": kubebin.SuperEdge, "metrics-server": kubebin.MetricsServerKit}
	kit, ok := kits[*kitName]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube-bin: unknown -kit %q: kubernetes, superedge or metrics-server\n", *kitName)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	set, err := kubebin.Ensure(ctx, kubebin.Options{Progress: os.Stderr, Kit: kit})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-bin:", err)
		os.Exit(1)
	}
	fmt.Println(set.Dir)
}
