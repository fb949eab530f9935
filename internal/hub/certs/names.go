package certs

import "net"

// NodeAddress is one of a Node's status addresses (type and address).
type NodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

// ServingNames are the DNS names and IPs a node's hub serves under, so the
// ones its serving certificate may carry: loopback (where the node's
// components reach the hub), the node's name, and its status addresses
// (host and DNS names, internal and external IPs). The join asks for them
// and sitegrid-manager's approver allows nothing else.
func ServingNames(node string, addrs []NodeAddress) ([]string, []net.IP) {
	dns := []string{"localhost", node}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	seen := map[string]bool{"localhost": true, node: true, "127.0.0.1": true, "::1": true}
	for _, a := range addrs {
		switch a.Type {
		case "InternalIP", "ExternalIP":
			if ip := net.ParseIP(a.Address); ip != nil && !seen[ip.String()] {
				seen[ip.String()] = true
				ips = append(ips, ip)
			}
		case "Hostname", "InternalDNS", "ExternalDNS":
			if !seen[a.Address] {
				seen[a.Address] = true
				dns = append(dns, a.Address)
			}
		}
	}
	return dns, ips
}
