package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

func TestConfigValidate(t *testing.T) {
	valid := func() HubConfiguration {
		return HubConfiguration{NodeName: "a-1", ServingCertFile: "s.crt", ServingKeyFile: "s.key", ClientCAFile: "ca.crt",
			ServerCAFile: "ca.crt", ClientCertFile: "c.crt", ClientKeyFile: "c.key", Servers: []string{"https://198.18.0.1:6443"}}
	}
	cases := []struct {
		name    string
		mutate  func(*HubConfiguration)
		wantErr string
	}{
		{"complete", func(*HubConfiguration) {}, ""},
		{"missing fields are named", func(c *HubConfiguration) { c.NodeName, c.Servers = "", nil }, "lacks nodeName, servers"},
		{"renewed certificates instead of files", func(c *HubConfiguration) {
			c.CertificateDirectory = "/var/lib/sitegrid-hub/pki"
			c.ServingCertFile, c.ServingKeyFile, c.ClientCertFile, c.ClientKeyFile = "", "", "", ""
		}, ""},
		{"certificate files and a certificate directory", func(c *HubConfiguration) { c.CertificateDirectory = "/var/lib/sitegrid-hub/pki" }, "is set with certificateDirectory"},
		{"no certificates at all", func(c *HubConfiguration) { c.ServingCertFile, c.ClientKeyFile = "", "" }, "lacks clientKeyFile, servingCertFile"},
		{"kubernetes endpoint", func(c *HubConfiguration) { c.ServiceTopology.KubernetesEndpoint = "169.254.2.1:10268" }, ""},
		{"kubernetes endpoint without port", func(c *HubConfiguration) { c.ServiceTopology.KubernetesEndpoint = "169.254.2.1" }, "not an IP:port"},
		{"kubernetes endpoint by name", func(c *HubConfiguration) { c.ServiceTopology.KubernetesEndpoint = "hub.local:10268" }, "not an IP:port"},
		{"health", func(c *HubConfiguration) { c.Health = Health{UnitKey: "shops", BindAddress: "0.0.0.0:7946"} }, ""},
		{"health bind address without port", func(c *HubConfiguration) { c.Health = Health{UnitKey: "shops", BindAddress: "0.0.0.0"} }, "health.bindAddress \"0.0.0.0\" is not host:port"},
		{"health advertise address without port", func(c *HubConfiguration) { c.Health = Health{UnitKey: "shops", AdvertiseAddress: "198.18.1.10"} }, "health.advertiseAddress"},
		{"health report interval too short", func(c *HubConfiguration) {
			c.Health = Health{UnitKey: "shops", ReportInterval: metav1.Duration{Duration: time.Millisecond}}
		}, "under 1s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaultsHealth(t *testing.T) {
	c := HubConfiguration{Health: Health{UnitKey: "shops"}}
	c.Defaults()
	if c.Health.BindAddress != "0.0.0.0:7946" || c.Health.ReportInterval.Duration != 10*time.Second {
		t.Errorf("health defaults: %+v", c.Health)
	}
	off := HubConfiguration{}
	off.Defaults()
	if off.Health.BindAddress != "" {
		t.Errorf("health is off without unitKey, yet defaults were set: %+v", off.Health)
	}
}

// TestShippedFiles: config/hub's example configuration is a valid hub
// configuration (with its placeholders filled in), and its static pod
// decodes strictly as a Pod running the hub with that configuration.
func TestShippedFiles(t *testing.T) {
	root := filepath.Join("..", "..", "..", "config", "hub")
	data, err := os.ReadFile(filepath.Join(root, "hub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(data)
	if err != nil {
		t.Fatalf("hub.yaml: %v", err)
	}
	if cfg.APIVersion != APIVersion {
		t.Errorf("hub.yaml is not versioned")
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Errorf("hub.yaml: %v", err)
	}
	data, err = os.ReadFile(filepath.Join(root, "sitegrid-hub-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("sitegrid-hub-pod.yaml: %v", err)
	}
	c := pod.Spec.Containers[0]
	if !pod.Spec.HostNetwork || len(c.Args) != 2 || c.Args[1] != "/etc/sitegrid/hub.yaml" || c.SecurityContext == nil || ptr.Deref(c.SecurityContext.RunAsUser, -1) != 0 {
		t.Errorf("the static pod does not run the hub as expected: %+v", pod.Spec)
	}
}

// TestLoad: the versioned file is read, so is the format before apiVersion
// and kind (the same fields), and a file of another type or with a field
// the hub does not know is refused, saying why.
func TestLoad(t *testing.T) {
	const fields = "nodeName: a-1\nservers: [https://198.18.0.1:6443]\nprobeInterval: 500ms\n"
	want := HubConfiguration{TypeMeta: metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind},
		NodeName: "a-1", Servers: []string{"https://198.18.0.1:6443"}, ProbeInterval: metav1.Duration{Duration: 500 * time.Millisecond}}
	for _, tc := range []struct {
		name, data, wantErr string
	}{
		{"versioned", "apiVersion: " + APIVersion + "\nkind: " + Kind + "\n" + fields, ""},
		{"unversioned, as before", fields, ""},
		{"another version", "apiVersion: hub.config.sitegrid.io/v9\nkind: " + Kind + "\n" + fields, `apiVersion "hub.config.sitegrid.io/v9"`},
		{"another kind", "apiVersion: " + APIVersion + "\nkind: KubeletConfiguration\n" + fields, `kind "KubeletConfiguration"`},
		{"a kind without a version", "kind: " + Kind + "\n" + fields, "this hub reads apiVersion " + APIVersion},
		{"an unknown field", fields + "nodname: a-2\n", "unknown field"},
		{"empty", "", "this hub reads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Load([]byte(tc.data))
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one saying %q", err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("refused: %v", err)
			default:
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("configuration (-want +got):\n%s", diff)
				}
			}
		})
	}
}
