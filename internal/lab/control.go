package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/unixsock"
)

// The lab owner (`lab up`) holds every edge node's link and processes; the
// other lab commands reach it through a unix socket in the workdir. The
// workdir is 0700 and the socket 0600, so only the lab's user can drive it.

func socketPath(workdir string) string { return filepath.Join(workdir, socketFile) }

// controlRequest names nodes or sites (partition, heal) or a node to add.
type controlRequest struct {
	Targets []string          `json:"targets,omitempty"`
	Name    string            `json:"name,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Real asks for a real node; File is an image archive to load.
	Real bool   `json:"real,omitempty"`
	File string `json:"file,omitempty"`
}

type controlReply struct {
	Nodes  []string     `json:"nodes,omitempty"`
	Status []NodeStatus `json:"status,omitempty"`
	IP     string       `json:"ip,omitempty"`
	Images []string     `json:"images,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// serveControl answers the other lab commands until ctx ends.
func serveControl(ctx context.Context, workdir string, e *edge) (func(), error) {
	path := socketPath(workdir)
	ln, err := unixsock.Listen(path)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	handle := func(pattern string, f func(context.Context, controlRequest) (controlReply, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			var req controlRequest
			if r.Body != nil && r.ContentLength != 0 {
				if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
					writeReply(w, controlReply{}, fmt.Errorf("bad request: %w", err))
					return
				}
			}
			reply, err := f(r.Context(), req)
			writeReply(w, reply, err)
		})
	}
	handle("GET /v1/nodes", func(ctx context.Context, _ controlRequest) (controlReply, error) {
		return controlReply{Status: e.status(ctx)}, nil
	})
	handle("POST /v1/partition", func(_ context.Context, req controlRequest) (controlReply, error) {
		if len(req.Targets) == 0 {
			return controlReply{}, errors.New("name the nodes or sites to partition")
		}
		nodes, err := e.setLinks(req.Targets, true)
		return controlReply{Nodes: nodes}, err
	})
	handle("POST /v1/heal", func(_ context.Context, req controlRequest) (controlReply, error) {
		nodes, err := e.setLinks(req.Targets, false)
		return controlReply{Nodes: nodes}, err
	})
	handle("POST /v1/stop", func(ctx context.Context, req controlRequest) (controlReply, error) {
		if len(req.Targets) == 0 {
			return controlReply{}, errors.New("name the nodes or sites to stop")
		}
		nodes, err := e.setPower(ctx, req.Targets, false)
		return controlReply{Nodes: nodes}, err
	})
	handle("POST /v1/start", func(ctx context.Context, req controlRequest) (controlReply, error) {
		nodes, err := e.setPower(ctx, req.Targets, true)
		return controlReply{Nodes: nodes}, err
	})
	handle("POST /v1/nodes", func(ctx context.Context, req controlRequest) (controlReply, error) {
		ip, err := e.addNamed(ctx, req.Name, req.Labels, req.Real)
		return controlReply{IP: ip}, err
	})
	handle("POST /v1/reboot", func(ctx context.Context, req controlRequest) (controlReply, error) {
		if len(req.Targets) == 0 {
			return controlReply{}, errors.New("name the nodes or sites to reboot")
		}
		nodes, err := e.reboot(ctx, req.Targets)
		return controlReply{Nodes: nodes}, err
	})
	for path, join := range map[string]bool{"POST /v1/join": true, "POST /v1/leave": false} {
		handle(path, func(ctx context.Context, req controlRequest) (controlReply, error) {
			if len(req.Targets) == 0 {
				return controlReply{}, errors.New("name the real nodes or sites")
			}
			nodes, err := e.setJoined(ctx, req.Targets, join)
			return controlReply{Nodes: nodes}, err
		})
	}
	handle("POST /v1/images", func(ctx context.Context, req controlRequest) (controlReply, error) {
		refs, nodes, err := e.loadImage(ctx, req.File)
		return controlReply{Images: refs, Nodes: nodes}, err
	})
	mux.HandleFunc("DELETE /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeReply(w, controlReply{}, e.remove(r.Context(), r.PathValue("name")))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
	}, nil
}

func writeReply(w http.ResponseWriter, reply controlReply, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		reply.Error = err.Error()
		w.WriteHeader(http.StatusBadRequest)
	}
	_ = json.NewEncoder(w).Encode(reply)
}

// addNamed adds a node with the lowest free address of its site's network.
func (e *edge) addNamed(ctx context.Context, name string, labels map[string]string, real bool) (string, error) {
	nodes, err := e.admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for i := range nodes.Items {
		used[internalIP(&nodes.Items[i])] = true
	}
	ip, err := freeNodeIP(labels[SiteLabel], used)
	if err != nil {
		return "", err
	}
	if labels == nil {
		labels = map[string]string{}
	}
	n := controlplane.Node{Name: name, Labels: labels, InternalIP: ip}
	if err := e.add(ctx, n, labels[SiteLabel], real); err != nil {
		return "", err
	}
	return ip, controlplane.WaitNodesReady(ctx, e.admin, 2*time.Minute, name)
}

// control sends one request to the lab owner in workdir.
func control(ctx context.Context, workdir, method, path string, req controlRequest) (controlReply, error) {
	if _, err := Running(workdir); err != nil {
		return controlReply{}, err
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath(workdir))
	}}}
	body, err := json.Marshal(req)
	if err != nil {
		return controlReply{}, err
	}
	r, err := http.NewRequestWithContext(ctx, method, "http://lab"+path, bytes.NewReader(body))
	if err != nil {
		return controlReply{}, err
	}
	resp, err := hc.Do(r)
	if err != nil {
		return controlReply{}, fmt.Errorf("reach the lab in %s: %w", workdir, err)
	}
	defer resp.Body.Close()
	var reply controlReply
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return controlReply{}, fmt.Errorf("the lab's answer: %w", err)
	}
	if reply.Error != "" {
		return reply, errors.New(reply.Error)
	}
	return reply, nil
}

// Partition cuts the uplinks of the named nodes and of every node of the
// named sites: their hubs lose the cloud, and the cloud loses their kubelets.
func Partition(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/partition", targets, "cut the uplink of", "those uplinks were cut already", out)
}

// Heal restores the uplinks of the named nodes and sites; none means all.
func Heal(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/heal", targets, "healed the uplink of", "no uplink was cut", out)
}

// StopNodes powers the named nodes (or every node of the named sites) off:
// their hub, kubelet and kube-proxy stop and are not restarted, as when a
// machine dies. Their peers stop hearing them; the cloud loses them too.
func StopNodes(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/stop", targets, "stopped", "those nodes were stopped already", out)
}

// StartNodes powers stopped nodes on again; none named means all.
func StartNodes(ctx context.Context, workdir string, targets []string, out io.Writer) error {
	return setUplinks(ctx, workdir, "/v1/start", targets, "started", "no node was stopped", out)
}

// setUplinks asks the lab owner to change nodes (uplinks, power) and says
// which changed.
func setUplinks(ctx context.Context, workdir, path string, targets []string, changed, unchanged string, out io.Writer) error {
	reply, err := control(ctx, workdir, http.MethodPost, path, controlRequest{Targets: targets})
	if err != nil {
		return err
	}
	if len(reply.Nodes) == 0 {
		fmt.Fprintln(out, unchanged)
		return nil
	}
	fmt.Fprintf(out, "%s %s\n", changed, strings.Join(reply.Nodes, ", "))
	return nil
}

// EdgeNodes returns what the lab owner knows of its edge nodes.
func EdgeNodes(ctx context.Context, workdir string) ([]NodeStatus, error) {
	reply, err := control(ctx, workdir, http.MethodGet, "/v1/nodes", controlRequest{})
	return reply.Status, err
}

// ViaHubKubeconfig is the path of a kubeconfig that reaches the cluster
// through node's hub, as the lab's admin ServiceAccount.
func ViaHubKubeconfig(ctx context.Context, workdir, node string) (string, error) {
	nodes, err := EdgeNodes(ctx, workdir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, n := range nodes {
		if n.Name == node {
			return n.ViaHubKubeconfig, nil
		}
		names = append(names, n.Name)
	}
	return "", fmt.Errorf("%q is not a lab node; the lab's nodes are %s", node, strings.Join(names, ", "))
}
