package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sitegrid/sitegrid/internal/lab"
)

func newLabCommand() *cobra.Command {
	var workdir string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run sitegrid on this machine: a real control plane with simulated edge sites",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(workdir)
			if err != nil {
				return err
			}
			workdir = abs
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&workdir, "workdir", lab.DefaultWorkdir(), "Folder holding the lab's state, logs and kubeconfigs.")
	cmd.AddCommand(
		newLabUpCommand(&workdir),
		&cobra.Command{
			Use: "down", Short: "Stop every process of the lab and remove its state", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return lab.Down(workdir, cmd.OutOrStdout()) },
		},
		&cobra.Command{
			Use: "status", Short: "Show the lab's processes, sites, nodes, uplinks and hubs", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return lab.Status(cmd.Context(), workdir, cmd.OutOrStdout())
			},
		},
		newLabKubeconfigCommand(&workdir),
		&cobra.Command{
			Use:   "partition NODE|SITE...",
			Short: "Cut the uplink of nodes or whole sites: the cloud loses them, their hubs serve from cache",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.Partition(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "heal [NODE|SITE...]",
			Short: "Restore the uplink of nodes or sites (all when none is named)",
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.Heal(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "stop-node NODE|SITE...",
			Short: "Power nodes off: their hub, kubelet and kube-proxy stop and stay stopped, as when a machine dies",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.StopNodes(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "start-node [NODE|SITE...]",
			Short: "Power stopped nodes on again (all when none is named)",
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.StartNodes(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "reboot NODE|SITE...",
			Short: "Power-cycle nodes or sites: every process killed, runtime state and network lost, disks kept, services booted again",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.Reboot(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "leave NODE|SITE...",
			Short: "Run sitegrid-hub leave on real nodes: their kubelet and kube-proxy talk to the cloud directly",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.Leave(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "join NODE|SITE...",
			Short: "Join real nodes again through sitegrid-hub join (a new bootstrap token, CSRs, approval)",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.Join(cmd.Context(), workdir, args, cmd.OutOrStdout())
			},
		},
		&cobra.Command{
			Use:   "load-image FILE",
			Short: "Import a docker-archive or OCI tarball into every real node's containerd (like kind load image-archive)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.LoadImage(cmd.Context(), workdir, args[0], cmd.OutOrStdout())
			},
		},
		newLabAddNodeCommand(&workdir),
		&cobra.Command{
			Use:   "exec NODE -- CMD...",
			Short: "Run a command inside a node's network namespace (real nodes and labs with --kube-proxy), for example curl of a Service IP",
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				if cmd.ArgsLenAtDash() != 1 {
					return errors.New("usage: lab exec NODE -- CMD (the command after --)")
				}
				return lab.Exec(cmd.Context(), workdir, args[0], args[1:], cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			},
		},
		&cobra.Command{
			Use: "remove-node NAME", Short: "Remove a simulated node from the lab", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return lab.RemoveNode(cmd.Context(), workdir, args[0], cmd.OutOrStdout())
			},
		},
	)
	return cmd
}

func newLabUpCommand(workdir *string) *cobra.Command {
	opts := lab.UpOptions{}
	var detach bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the lab (in the foreground; Ctrl-C stops it)",
		Long: `Start a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler), sitegrid-manager and kwok, then create simulated edge sites:
--sites sites of --nodes-per-site nodes each, every node labelled with its site.
The binaries are built from source on first use.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Workdir = *workdir
			opts.Out = cmd.OutOrStdout()
			if detach {
				// The detached copy runs the same command in the foreground.
				args := []string{"lab", "up", "--workdir", opts.Workdir,
					"--sites", strconv.Itoa(opts.Sites), "--nodes-per-site", strconv.Itoa(opts.NodesPerSite),
					"--apiserver-port", strconv.Itoa(opts.APIServerPort), "--node-monitor-grace-period", opts.NodeMonitorGracePeriod.String(),
					"--kube-proxy=" + strconv.FormatBool(opts.KubeProxy), "--real-nodes=" + strconv.FormatBool(opts.RealNodes),
					"--superedge-agents=" + strconv.FormatBool(opts.SuperEdgeAgents), "--metrics-server=" + strconv.FormatBool(opts.MetricsServer),
					"--tunnel-replicas=" + strconv.Itoa(opts.TunnelReplicas)}
				return lab.Detach(cmd.Context(), opts.Workdir, args, cmd.OutOrStdout())
			}
			// The first signal stops the lab cleanly; a second one exits at once
			// (the lab's processes die with this one).
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			go func() {
				<-sigs
				cancel()
				<-sigs
				os.Exit(130)
			}()
			return lab.Up(ctx, opts)
		},
	}
	cmd.Flags().IntVar(&opts.Sites, "sites", 3, "Number of simulated edge sites.")
	cmd.Flags().IntVar(&opts.NodesPerSite, "nodes-per-site", 2, "Simulated nodes in each site.")
	cmd.Flags().IntVar(&opts.APIServerPort, "apiserver-port", lab.DefaultAPIServerPort, "Port of the lab's kube-apiserver on 127.0.0.1.")
	cmd.Flags().DurationVar(&opts.NodeMonitorGracePeriod, "node-monitor-grace-period", 0, "How long the cloud waits for a node's lease before marking it NotReady (default: Kubernetes' 40s); shorter makes partitions show sooner.")
	cmd.Flags().BoolVar(&opts.KubeProxy, "kube-proxy", false, "Run the real kube-proxy on every node, in the node's own network namespace against its hub (needs root, ip and iptables).")
	cmd.Flags().BoolVar(&opts.RealNodes, "real-nodes", false, "Make every node a real node: containerd, the real kubelet and kube-proxy in the node's own network namespace on its site's LAN (needs root, containerd, runc, CNI plugins, busybox-static).")
	cmd.Flags().IntVar(&opts.TunnelReplicas, "tunnel-replicas", 1, fmt.Sprintf("sitegrid-tunnel replicas (1 to %d); the apiserver reaches the first live one, each node's hub holds its session with one of them, and the others forward to it.", lab.MaxTunnelReplicas))
	cmd.Flags().BoolVar(&opts.MetricsServer, "metrics-server", false, "Run metrics-server (built from its source) beside the control plane, scraping the kubelets through the tunnel, so `kubectl top` works for real nodes.")
	cmd.Flags().BoolVar(&opts.SuperEdgeAgents, "superedge-agents", false, "With --real-nodes: the nodes boot on SuperEdge's edge agent lite-apiserver (built from SuperEdge's source) as a SuperEdge cluster's do; `lab join NODE` replaces it with sitegrid-hub, `lab leave NODE` goes back.")
	cmd.Flags().BoolVar(&detach, "detach", false, "Return once the lab is ready and leave it running in the background.")
	return cmd
}

func newLabAddNodeCommand(workdir *string) *cobra.Command {
	var labels string
	var real bool
	cmd := &cobra.Command{
		Use:   "add-node NAME",
		Short: "Add a node to the lab: simulated (kwok), or real with --real",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.ParseLabels(labels)
			if err != nil {
				return err
			}
			return lab.AddNode(cmd.Context(), *workdir, args[0], l, real, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&labels, "labels", "", "Node labels, k=v,k2=v2 (sitegrid.io/site=site-N puts it in a lab site).")
	cmd.Flags().BoolVar(&real, "real", false, "A real node: containerd, the real kubelet and kube-proxy in its own network namespace (needs root).")
	return cmd
}

func newLabKubeconfigCommand(workdir *string) *cobra.Command {
	var viaHub string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab's admin kubeconfig, or of one through a node's hub",
		Long: `Print the path of the lab's admin kubeconfig. With --via-hub NODE, print a
kubeconfig that talks to the cluster through that node's sitegrid-hub, as the
lab's admin ServiceAccount: while the node is partitioned, reads are answered
from the hub's cache and writes are refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if viaHub != "" {
				path, err := lab.ViaHubKubeconfig(cmd.Context(), *workdir, viaHub)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), path)
				return nil
			}
			s, err := lab.Running(*workdir)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s.Kubeconfig)
			return nil
		},
	}
	cmd.Flags().StringVar(&viaHub, "via-hub", "", "A lab node: print a kubeconfig through its hub.")
	return cmd
}
