// Command sitegrid-hub is the API server of an edge node's components: it
// forwards to the cloud while it can and answers from its cache when it
// cannot. `sitegrid-hub join` makes a node an edge node, `sitegrid-hub
// leave` undoes it. See docs/hub.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/sitegrid/sitegrid/internal/hub/config"
	"github.com/sitegrid/sitegrid/internal/hub/server"
)

// listFlag is a comma-separated list bound to a slice.
type listFlag struct{ list *[]string }

func (l listFlag) String() string {
	if l.list == nil {
		return ""
	}
	return strings.Join(*l.list, ",")
}

func (l listFlag) Set(v string) error {
	*l.list = strings.Split(v, ",")
	return nil
}

// bindFlags binds the command line to cfg's fields.
func bindFlags(fs *flag.FlagSet, cfg *config.HubConfiguration, configFile *string) {
	fs.StringVar(configFile, "config", "", "YAML configuration file; flags given on the command line override it.")
	fs.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "Name of the node the hub serves.")
	fs.StringVar(&cfg.ListenAddress, "listen-address", cfg.ListenAddress, "Address of the API front for the node's components (default 127.0.0.1:10290).")
	fs.StringVar(&cfg.ServingCertFile, "serving-cert-file", cfg.ServingCertFile, "Serving certificate.")
	fs.StringVar(&cfg.ServingKeyFile, "serving-key-file", cfg.ServingKeyFile, "Serving key.")
	fs.StringVar(&cfg.ClientCAFile, "client-ca-file", cfg.ClientCAFile, "CA that signs client certificates (the cluster CA).")
	fs.Var(listFlag{&cfg.Servers}, "servers", "Comma-separated cloud apiserver URLs, in order of preference.")
	fs.StringVar(&cfg.ServerCAFile, "server-ca-file", cfg.ServerCAFile, "CA of the apiservers' serving certificates.")
	fs.StringVar(&cfg.ClientCertFile, "client-cert-file", cfg.ClientCertFile, "The hub's client certificate (impersonates this node's kubelet).")
	fs.StringVar(&cfg.ClientKeyFile, "client-key-file", cfg.ClientKeyFile, "The hub's client key.")
	fs.StringVar(&cfg.CachePath, "cache-path", cfg.CachePath, "Cache file (default /var/lib/sitegrid-hub/cache.db).")
	fs.StringVar(&cfg.HealthAddress, "health-address", cfg.HealthAddress, "Address of /healthz, /readyz and /metrics (default 127.0.0.1:10291).")
	fs.DurationVar(&cfg.ProbeInterval.Duration, "probe-interval", cfg.ProbeInterval.Duration, "How often each apiserver is probed (default 2s).")
	fs.StringVar(&cfg.ServiceTopology.KubernetesEndpoint, "kubernetes-endpoint", cfg.ServiceTopology.KubernetesEndpoint,
		"IP:port where the node's pods reach this hub: kube-proxy and CoreDNS then see the default/kubernetes Service there (default: off).")
	fs.Var(listFlag{&cfg.Tunnel.Servers}, "tunnel-servers", "Comma-separated tunnel servers (host:port) the hub dials out to for the apiserver's connections to this node's kubelet (default: no tunnel).")
	fs.StringVar(&cfg.Tunnel.KubeletAddress, "tunnel-kubelet-address", cfg.Tunnel.KubeletAddress, "Where the tunnel reaches this node's kubelet (default 127.0.0.1:10250).")
	fs.Func("memory-limit", "Go runtime soft memory limit, a quantity such as 12Mi (default none: the runtime's, or GOMEMLIMIT).", func(v string) error {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return err
		}
		cfg.MemoryLimit = &q
		return nil
	})
	fs.Func("gc-percent", "Go garbage collection target, as GOGC (default 50; the GOGC environment variable wins).", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		cfg.GCPercent = &n
		return nil
	})
	klog.InitFlags(fs)
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "join" || os.Args[1] == "leave") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		run := runJoin
		if os.Args[1] == "leave" {
			run = runLeave
		}
		err := run(ctx, os.Args[2:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config.HubConfiguration
	var configFile string
	fs := flag.NewFlagSet("sitegrid-hub", flag.ExitOnError)
	bindFlags(fs, &cfg, &configFile)
	_ = fs.Parse(os.Args[1:])
	if configFile != "" {
		// The file first, then the command line again on top of it.
		fromFile, err := config.LoadFile(configFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		cfg = fromFile
		again := flag.NewFlagSet("sitegrid-hub", flag.ExitOnError)
		bindFlags(again, &cfg, &configFile)
		_ = again.Parse(os.Args[1:])
	}
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
