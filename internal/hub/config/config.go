// Package config is sitegrid-hub's configuration file: a versioned kind,
// HubConfiguration of hub.config.sitegrid.io/v1alpha1, as the kubelet's and
// kube-proxy's component configurations are. A file without apiVersion and
// kind (the format before it was versioned) is read as v1alpha1, whose
// fields it has.
package config

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/sitegrid/sitegrid/internal/hub/topology"
)

// APIVersion and Kind name the configuration's type.
const (
	APIVersion = "hub.config.sitegrid.io/v1alpha1"
	Kind       = "HubConfiguration"
)

// HubConfiguration is the hub's configuration, from a YAML file and flags.
type HubConfiguration struct {
	metav1.TypeMeta `json:",inline"`
	// NodeName is the node the hub serves.
	NodeName string `json:"nodeName"`
	// ListenAddress serves the Kubernetes API to the node's components.
	ListenAddress string `json:"listenAddress"`
	// ServingCertFile and ServingKeyFile are the hub's serving certificate
	// (unless CertificateDirectory is set).
	ServingCertFile string `json:"servingCertFile,omitempty"`
	ServingKeyFile  string `json:"servingKeyFile,omitempty"`
	// ClientCAFile verifies client certificates (the cluster CA).
	ClientCAFile string `json:"clientCAFile"`
	// Servers are the cloud apiserver URLs, in order of preference.
	Servers []string `json:"servers"`
	// ServerCAFile verifies the apiservers.
	ServerCAFile string `json:"serverCAFile"`
	// ClientCertFile and ClientKeyFile are the hub's own credential, used to
	// impersonate certificate clients (RBAC: docs/hub.md), unless
	// CertificateDirectory is set.
	ClientCertFile string `json:"clientCertFile,omitempty"`
	ClientKeyFile  string `json:"clientKeyFile,omitempty"`
	// CertificateDirectory, set by `sitegrid-hub join`, holds the hub's
	// client and serving certificates as pairs it renews itself through
	// CertificateSigningRequests before they expire (internal/hub/certs);
	// the four certificate file fields are then unset.
	CertificateDirectory string `json:"certificateDirectory,omitempty"`
	// CachePath is the cache file.
	CachePath string `json:"cachePath"`
	// HealthAddress serves /healthz, /readyz and /metrics over plain HTTP.
	HealthAddress string `json:"healthAddress"`
	// ProbeInterval is how often each apiserver is probed ("2s").
	ProbeInterval metav1.Duration `json:"probeInterval"`
	// MemoryLimit, when set, is the Go runtime's soft memory limit ("12Mi"):
	// the hub's live heap is a few MiB whatever the cluster's size (lists
	// stream through it), and a limit near it makes the runtime hand freed
	// memory back at once, at the price of latency (docs/hub.md has both
	// measured). Unset or "0": the runtime's default, or GOMEMLIMIT.
	MemoryLimit *resource.Quantity `json:"memoryLimit,omitempty"`
	// GCPercent is the Go runtime's garbage collection target (GOGC): the
	// heap may grow by this percentage of the live heap before a collection.
	// Default 50 (the runtime's own is 100): the hub's live heap is about
	// 3 MiB, so this holds 1.5 MiB less at a cost not measurable in its
	// latency (docs/hub.md). The GOGC environment variable, when set, wins.
	GCPercent *int `json:"gcPercent,omitempty"`
	// ServiceTopology configures the endpoint filter (docs/hub.md).
	ServiceTopology ServiceTopology `json:"serviceTopology,omitempty"`
	// Health configures distributed health (docs/health.md).
	Health Health `json:"health,omitempty"`
	// Tunnel configures the tunnel agent (docs/tunnel.md).
	Tunnel Tunnel `json:"tunnel,omitempty"`
}

// Tunnel configures the hub's end of the cloud-to-edge tunnel: the hub
// dials out to a tunnel server with its node-bound client certificate and
// carries the apiserver's connections to this node's kubelet.
type Tunnel struct {
	// Servers are the tunnel servers' host:port, tried in turn. Empty: no
	// tunnel agent.
	Servers []string `json:"servers,omitempty"`
	// ServerCAFile verifies the tunnel servers (default: serverCAFile).
	ServerCAFile string `json:"serverCAFile,omitempty"`
	// KubeletAddress is where the hub reaches the node's kubelet (default
	// 127.0.0.1:10250); the agent dials nothing else.
	KubeletAddress string `json:"kubeletAddress,omitempty"`
	// KubeletPort is the port the kubelet serves on as its Node says (the
	// only port the apiserver may ask for; default: kubeletAddress's).
	KubeletPort int `json:"kubeletPort,omitempty"`
}

// Health configures the hub's member of its unit's gossip group.
type Health struct {
	// UnitKey is the node label naming the node's unit: the NodeGroup's
	// name (its nodes carry <group>=<unit>). Empty: no distributed health.
	UnitKey string `json:"unitKey,omitempty"`
	// BindAddress is where the hub gossips, UDP and TCP (default
	// "0.0.0.0:7946"); the others dial its port on the node's InternalIP,
	// or the node's health.sitegrid.io/gossip-address annotation.
	BindAddress string `json:"bindAddress,omitempty"`
	// AdvertiseAddress overrides what the others dial.
	AdvertiseAddress string `json:"advertiseAddress,omitempty"`
	// ReportInterval is how often the unit's report is renewed when nothing
	// changes (default 10s); the control plane takes a unit whose report is
	// older than three of them for unreachable.
	ReportInterval metav1.Duration `json:"reportInterval,omitempty"`
}

// ServiceTopology configures the service topology filter.
type ServiceTopology struct {
	// Disabled turns the filter off: every component sees every endpoint.
	Disabled bool `json:"disabled,omitempty"`
	// Components whose reads of EndpointSlices and Endpoints are filtered,
	// by User-Agent name (default kube-proxy and coredns).
	Components []string `json:"components,omitempty"`
	// KubernetesEndpoint, an IP:port where the node's pods reach this hub,
	// makes the default/kubernetes Service point there for those
	// components, so in-cluster clients on the node go through the hub too
	// and keep working offline. The hub must serve on it with a
	// certificate of the cluster CA naming that IP.
	KubernetesEndpoint string `json:"kubernetesEndpoint,omitempty"`
}

// DefaultGCPercent is the hub's GOGC unless configured.
const DefaultGCPercent = 50

// Defaults fills what is unset.
func (c *HubConfiguration) Defaults() {
	if c.ListenAddress == "" {
		c.ListenAddress = "127.0.0.1:10290"
	}
	if c.HealthAddress == "" {
		c.HealthAddress = "127.0.0.1:10291"
	}
	if c.CachePath == "" {
		c.CachePath = "/var/lib/sitegrid-hub/cache.db"
	}
	if c.ProbeInterval.Duration == 0 {
		c.ProbeInterval.Duration = 2 * time.Second
	}
	if c.GCPercent == nil {
		c.GCPercent = ptr.To(DefaultGCPercent)
	}
	if len(c.ServiceTopology.Components) == 0 {
		c.ServiceTopology.Components = topology.DefaultComponents
	}
	if c.Health.UnitKey != "" && c.Health.BindAddress == "" {
		c.Health.BindAddress = "0.0.0.0:7946"
	}
	if len(c.Tunnel.Servers) > 0 && c.Tunnel.KubeletAddress == "" {
		c.Tunnel.KubeletAddress = "127.0.0.1:10250"
	}
	if c.Health.UnitKey != "" && c.Health.ReportInterval.Duration == 0 {
		c.Health.ReportInterval.Duration = 10 * time.Second
	}
}

// Validate says what is missing.
func (c *HubConfiguration) Validate() error {
	var missing []string
	required := map[string]string{"nodeName": c.NodeName, "clientCAFile": c.ClientCAFile, "serverCAFile": c.ServerCAFile}
	certFiles := map[string]string{"servingCertFile": c.ServingCertFile, "servingKeyFile": c.ServingKeyFile,
		"clientCertFile": c.ClientCertFile, "clientKeyFile": c.ClientKeyFile}
	if c.CertificateDirectory == "" {
		maps.Copy(required, certFiles)
	} else {
		for name, v := range certFiles {
			if v != "" {
				return fmt.Errorf("%s is set with certificateDirectory: the hub's certificates are either files or renewed pairs in the directory", name)
			}
		}
	}
	for name, v := range required {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(c.Servers) == 0 {
		missing = append(missing, "servers")
	}
	if e := c.ServiceTopology.KubernetesEndpoint; e != "" {
		if _, err := netip.ParseAddrPort(e); err != nil {
			return fmt.Errorf("serviceTopology.kubernetesEndpoint %q is not an IP:port: %w", e, err)
		}
	}
	if c.Health.UnitKey != "" {
		for name, a := range map[string]string{"health.bindAddress": c.Health.BindAddress, "health.advertiseAddress": c.Health.AdvertiseAddress} {
			if a == "" {
				continue
			}
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				return fmt.Errorf("%s %q is not host:port", name, a)
			}
		}
		if d := c.Health.ReportInterval.Duration; d != 0 && d < time.Second {
			return fmt.Errorf("health.reportInterval %s is under 1s", d)
		}
	}
	if p := c.Tunnel.KubeletPort; p < 0 || p > 65535 {
		return fmt.Errorf("tunnel.kubeletPort %d is not a port", p)
	}
	for _, a := range append(append([]string(nil), c.Tunnel.Servers...), c.Tunnel.KubeletAddress) {
		if a == "" {
			continue
		}
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			return fmt.Errorf("tunnel address %q is not host:port", a)
		}
	}
	if c.GCPercent != nil && *c.GCPercent < 10 {
		return fmt.Errorf("gcPercent %d is under 10 (the hub would do little but collect garbage)", *c.GCPercent)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("hub configuration lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// Load reads a YAML configuration strictly: unknown fields are errors, so
// is a type other than HubConfiguration of APIVersion. Fields set by flags
// are applied after.
func Load(data []byte) (HubConfiguration, error) {
	var c HubConfiguration
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return HubConfiguration{}, err
	}
	switch {
	case c.APIVersion == "" && c.Kind == "" && len(bytes.TrimSpace(data)) > 0:
		// The unversioned format: v1alpha1's fields.
	case c.APIVersion != APIVersion || c.Kind != Kind:
		return HubConfiguration{}, fmt.Errorf("apiVersion %q kind %q: this hub reads apiVersion %s kind %s", c.APIVersion, c.Kind, APIVersion, Kind)
	}
	c.APIVersion, c.Kind = APIVersion, Kind
	return c, nil
}

// LoadFile reads a configuration file (Load).
func LoadFile(path string) (HubConfiguration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return HubConfiguration{}, err
	}
	c, err := Load(data)
	if err != nil {
		return HubConfiguration{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// TypeMeta is what a file sitegrid writes names its type with.
var TypeMeta = metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind}

// Loopback is where the hub's own node reaches a hub listening on listen:
// an unspecified host (":10290", "0.0.0.0:10290") is 127.0.0.1.
func Loopback(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
