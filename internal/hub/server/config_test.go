package server

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{NodeName: "a-1", ServingCertFile: "s.crt", ServingKeyFile: "s.key", ClientCAFile: "ca.crt",
			ServerCAFile: "ca.crt", ClientCertFile: "c.crt", ClientKeyFile: "c.key", Servers: []string{"https://198.18.0.1:6443"}}
	}
	cases := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"complete", func(*Config) {}, ""},
		{"missing fields are named", func(c *Config) { c.NodeName, c.Servers = "", nil }, "lacks nodeName, servers"},
		{"kubernetes endpoint", func(c *Config) { c.ServiceTopology.KubernetesEndpoint = "169.254.2.1:10268" }, ""},
		{"kubernetes endpoint without port", func(c *Config) { c.ServiceTopology.KubernetesEndpoint = "169.254.2.1" }, "not an IP:port"},
		{"kubernetes endpoint by name", func(c *Config) { c.ServiceTopology.KubernetesEndpoint = "hub.local:10268" }, "not an IP:port"},
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
