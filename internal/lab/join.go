package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sitegrid/sitegrid/internal/jointoken"
	"github.com/sitegrid/sitegrid/internal/process"
)

// A real node becomes an edge node the way a user's does (docs/hub.md, "Add
// an edge node"): the lab, as the cluster's administrator, makes a join
// token bound to the node (jointoken.Prepare, what `sitegridctl node
// join-command` does); the node runs `sitegrid-hub join` with it, which
// discovers the CA, obtains the hub's certificates through CSRs that
// sitegrid-manager approves and the controller-manager signs, and points the
// kubelet's and kube-proxy's kubeconfigs at the hub. The lab is the node's
// service manager (--init none): it starts the hub and restarts the two.
// `lab leave` runs `sitegrid-hub leave` and the node talks to the cloud
// directly again; `lab join` joins it once more.

// joinTokenTTL bounds a lab node's join token; the controller-manager's
// tokencleaner deletes it after.
const joinTokenTTL = time.Hour

// joinRoot is the node's filesystem root for what sitegrid-hub join writes
// (/etc/sitegrid, /var/lib/sitegrid-hub).
func (en *edgeNode) joinRoot() string { return filepath.Join(en.dir, "root") }

// joinHub joins the real node and starts its hub, then restarts the
// kubelet and kube-proxy so they reconnect through it.
func (e *edge) joinHub(ctx context.Context, en *edgeNode) error {
	token, err := jointoken.Prepare(ctx, e.admin, en.name, joinTokenTTL)
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(e.cp.CAFile)
	if err != nil {
		return err
	}
	pins, err := jointoken.CAHashes(ca)
	if err != nil {
		return err
	}
	if err := en.runHubCommand(ctx, e.hubBin, "join", "--server", en.cloudURL(), "--token", token,
		"--discovery-token-ca-cert-hash", strings.Join(pins, ","), "--node-name", en.name,
		"--root", en.joinRoot(), "--init", "none", "--config", en.real.hubBase,
		"--kubelet-kubeconfig", en.kubeletConfig, "--kube-proxy-kubeconfig", en.kubeProxyKubeconfig,
		"--component-kubeconfigs", en.real.dnsKubeconfig, "--timeout", "2m"); err != nil {
		return err
	}
	en.mu.Lock()
	en.real.joined = true
	en.mu.Unlock()
	if err := en.startHub(ctx, e.hubBin); err != nil {
		return err
	}
	if err := e.restartNodeComponents(ctx, en); err != nil {
		return err
	}
	// A node on SuperEdge's agents: the hub has replaced them, and they
	// stop only now that nothing reads through them.
	en.stopSuperEdge()
	return nil
}

// leaveHub runs sitegrid-hub leave on the real node once its hub is
// stopped, and restarts the kubelet and kube-proxy, which talk to the
// cloud directly again.
func (e *edge) leaveHub(ctx context.Context, en *edgeNode) error {
	en.mu.Lock()
	hub := en.hub
	en.hub = nil // the supervisor restarts what exits, not what is taken out
	en.real.joined = false
	en.mu.Unlock()
	if hub != nil {
		hub.Stop(10 * time.Second)
	}
	if err := en.runHubCommand(ctx, e.hubBin, "leave", "--root", en.joinRoot()); err != nil {
		return err
	}
	// The leave put back the kubeconfigs the node had: on a node that
	// booted on SuperEdge's agents, theirs.
	if en.runsSuperEdge() {
		if err := e.startSuperEdge(ctx, en); err != nil {
			return err
		}
	}
	return e.restartNodeComponents(ctx, en)
}

func (en *edgeNode) isJoined() bool {
	en.mu.Lock()
	defer en.mu.Unlock()
	return en.real != nil && en.real.joined
}

// setJoined joins (join true) or un-joins the real nodes of targets and
// returns the nodes that changed.
func (e *edge) setJoined(ctx context.Context, targets []string, join bool) ([]string, error) {
	nodes, err := e.resolve(targets)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, en := range nodes {
		if en.real == nil {
			return names, fmt.Errorf("node %s is a kwok node: only real nodes join through sitegrid-hub join", en.name)
		}
		en.mu.Lock()
		joined, off := en.real.joined, en.off
		en.mu.Unlock()
		if off {
			return names, fmt.Errorf("node %s is powered off", en.name)
		}
		if joined == join {
			continue
		}
		if join {
			err = e.joinHub(ctx, en)
		} else {
			err = e.leaveHub(ctx, en)
		}
		if err != nil {
			return names, err
		}
		names = append(names, en.name)
	}
	return names, nil
}

// restartNodeComponents restarts the kubelet, kube-proxy and DNS, so they
// read their kubeconfigs again; the node's containers keep running.
func (e *edge) restartNodeComponents(ctx context.Context, en *edgeNode) error {
	en.mu.Lock()
	kubelet, kubeProxy, dns := en.kubelet, en.kubeProxy, en.dns
	en.kubelet, en.kubeProxy, en.dns = nil, nil, nil
	en.mu.Unlock()
	for _, p := range []*process.Process{kubelet, kubeProxy, dns} {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	return errors.Join(en.startRealKubelet(ctx, e.real.kubeletBin), en.startKubeProxy(ctx, e.kubeProxyBin), en.startDNS(ctx, e.dnsBin))
}

// runHubCommand runs sitegrid-hub join or leave on the node, its output in
// the node's join.log.
func (en *edgeNode) runHubCommand(ctx context.Context, bin string, args ...string) error {
	logPath := filepath.Join(en.dir, "join.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sitegrid-hub %s on %s: %w:\n%s", args[0], en.name, err, process.LogTail(logPath, 15))
	}
	return nil
}
