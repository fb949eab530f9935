package certs

import (
	"fmt"
	"testing"
)

func TestServingNames(t *testing.T) {
	dns, ips := ServingNames("edge-1", []NodeAddress{
		{Type: "InternalIP", Address: "198.18.1.10"},
		{Type: "ExternalIP", Address: "198.18.1.10"}, // the same address twice: once
		{Type: "ExternalIP", Address: "198.19.0.7"},
		{Type: "Hostname", Address: "edge-1"},
		{Type: "InternalDNS", Address: "edge-1.shop.example"},
		{Type: "InternalIP", Address: "not-an-ip"},
		{Type: "Elsewhere", Address: "198.18.9.9"},
	})
	if got, want := fmt.Sprint(dns), "[localhost edge-1 edge-1.shop.example]"; got != want {
		t.Errorf("DNS names %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(ips), "[127.0.0.1 ::1 198.18.1.10 198.19.0.7]"; got != want {
		t.Errorf("IPs %s, want %s", got, want)
	}
}
