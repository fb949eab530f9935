package server

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		{"health", func(c *Config) { c.Health = Health{UnitKey: "shops", BindAddress: "0.0.0.0:7946"} }, ""},
		{"health bind address without port", func(c *Config) { c.Health = Health{UnitKey: "shops", BindAddress: "0.0.0.0"} }, "health.bindAddress \"0.0.0.0\" is not host:port"},
		{"health advertise address without port", func(c *Config) { c.Health = Health{UnitKey: "shops", AdvertiseAddress: "198.18.1.10"} }, "health.advertiseAddress"},
		{"health report interval too short", func(c *Config) {
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
	c := Config{Health: Health{UnitKey: "shops"}}
	c.Defaults()
	if c.Health.BindAddress != "0.0.0.0:7946" || c.Health.ReportInterval.Duration != 10*time.Second {
		t.Errorf("health defaults: %+v", c.Health)
	}
	off := Config{}
	off.Defaults()
	if off.Health.BindAddress != "" {
		t.Errorf("health is off without unitKey, yet defaults were set: %+v", off.Health)
	}
}
