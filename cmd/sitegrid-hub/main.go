// Command sitegrid-hub is the API server of an edge node's components: it
// forwards to the cloud while it can and answers from its cache when it
// cannot. See docs/hub.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/server"
)

func main() {
	configFile := flag.String("config", "", "YAML configuration file; flags given on the command line override it.")
	var fromFlags server.Config
	var servers string
	flag.StringVar(&fromFlags.NodeName, "node-name", "", "Name of the node the hub serves.")
	flag.StringVar(&fromFlags.ListenAddress, "listen-address", "", "Address of the API front for the node's components (default 127.0.0.1:10290).")
	flag.StringVar(&fromFlags.ServingCertFile, "serving-cert-file", "", "Serving certificate.")
	flag.StringVar(&fromFlags.ServingKeyFile, "serving-key-file", "", "Serving key.")
	flag.StringVar(&fromFlags.ClientCAFile, "client-ca-file", "", "CA that signs client certificates (the cluster CA).")
	flag.StringVar(&servers, "servers", "", "Comma-separated cloud apiserver URLs, in order of preference.")
	flag.StringVar(&fromFlags.ServerCAFile, "server-ca-file", "", "CA of the apiservers' serving certificates.")
	flag.StringVar(&fromFlags.ClientCertFile, "client-cert-file", "", "The hub's client certificate (impersonates this node's kubelet).")
	flag.StringVar(&fromFlags.ClientKeyFile, "client-key-file", "", "The hub's client key.")
	flag.StringVar(&fromFlags.CachePath, "cache-path", "", "Cache file (default /var/lib/sitegrid-hub/cache.db).")
	flag.StringVar(&fromFlags.HealthAddress, "health-address", "", "Address of /healthz, /readyz and /metrics (default 127.0.0.1:10291).")
	flag.DurationVar(&fromFlags.ProbeInterval.Duration, "probe-interval", 0, "How often each apiserver is probed (default 2s).")
	klog.InitFlags(flag.CommandLine)
	flag.Parse()

	cfg := server.Config{}
	if *configFile != "" {
		var err error
		if cfg, err = server.LoadFile(*configFile); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
	}
	// Flags given explicitly win over the file.
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "node-name":
			cfg.NodeName = fromFlags.NodeName
		case "listen-address":
			cfg.ListenAddress = fromFlags.ListenAddress
		case "serving-cert-file":
			cfg.ServingCertFile = fromFlags.ServingCertFile
		case "serving-key-file":
			cfg.ServingKeyFile = fromFlags.ServingKeyFile
		case "client-ca-file":
			cfg.ClientCAFile = fromFlags.ClientCAFile
		case "servers":
			cfg.Servers = strings.Split(servers, ",")
		case "server-ca-file":
			cfg.ServerCAFile = fromFlags.ServerCAFile
		case "client-cert-file":
			cfg.ClientCertFile = fromFlags.ClientCertFile
		case "client-key-file":
			cfg.ClientKeyFile = fromFlags.ClientKeyFile
		case "cache-path":
			cfg.CachePath = fromFlags.CachePath
		case "health-address":
			cfg.HealthAddress = fromFlags.HealthAddress
		case "probe-interval":
			cfg.ProbeInterval = fromFlags.ProbeInterval
		}
	})
	// The first signal shuts down gracefully; a second one exits at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		os.Exit(130)
	}()
	if err := server.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
