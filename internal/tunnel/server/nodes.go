package server

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// byAddress indexes Nodes by their name and every status address, so a
// CONNECT target resolves to the node it belongs to.
const byAddress = "address"

func addressIndex(obj any) ([]string, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return nil, nil
	}
	keys := []string{n.Name}
	for _, a := range n.Status.Addresses {
		if a.Address != n.Name {
			keys = append(keys, a.Address)
		}
	}
	return keys, nil
}

// target is what a CONNECT asked for, resolved.
type target struct {
	host string
	port int
	// node is the node the host belongs to, nil when it is none's.
	node *corev1.Node
}

// resolve finds the node a CONNECT target belongs to: a node's name, or an
// address in exactly one node's status. An address two nodes share (sites
// reusing a private range) is refused rather than guessed: the apiserver
// should dial nodes by name (--kubelet-preferred-address-types=Hostname
// first, its default).
func resolve(nodes cache.Indexer, hostPort string) (target, error) {
	host, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		return target{}, fmt.Errorf("CONNECT target %q is not host:port", hostPort)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return target{}, fmt.Errorf("CONNECT target %q has no valid port", hostPort)
	}
	t := target{host: host, port: port}
	if obj, ok, _ := nodes.GetByKey(host); ok {
		t.node = obj.(*corev1.Node)
		return t, nil
	}
	objs, err := nodes.ByIndex(byAddress, host)
	if err != nil {
		return target{}, err
	}
	switch len(objs) {
	case 0:
		return t, nil
	case 1:
		t.node = objs[0].(*corev1.Node)
		return t, nil
	}
	names := make([]string, 0, len(objs))
	for _, o := range objs {
		names = append(names, o.(*corev1.Node).Name)
	}
	sort.Strings(names)
	return target{}, fmt.Errorf("address %s belongs to nodes %s: refusing to guess; have the apiserver dial nodes by name (--kubelet-preferred-address-types=Hostname,...)", host, strings.Join(names, ", "))
}

// kubeletPort is the port the node's kubelet serves on.
func kubeletPort(n *corev1.Node) int {
	if p := int(n.Status.DaemonEndpoints.KubeletEndpoint.Port); p != 0 {
		return p
	}
	return 10250
}
