package kubestore

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/kubernetes"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Name is the plugin's directive.
const Name = "kubestore"

func init() { plugin.Register(Name, setup) }

// setup reads `kubestore` (no arguments): the kubernetes plugin of the
// same server block answers from a Store instead of CoreDNS's own. The
// directive runs before the kubernetes plugin's (cmd/sitegrid-dns's
// order), so its start-up swaps the store in before the plugin's start-up
// runs and waits for it.
func setup(c *caddy.Controller) error {
	for i := 0; c.Next(); i++ {
		if i > 0 {
			return plugin.ErrOnce
		}
		if c.NextArg() {
			return plugin.Error(Name, c.ArgErr())
		}
		if c.NextBlock() {
			return plugin.Error(Name, c.Errf("unknown property %q", c.Val()))
		}
	}
	config := dnsserver.GetConfig(c)
	c.OnStartup(func() error {
		k, ok := config.Handler("kubernetes").(*kubernetes.Kubernetes)
		if !ok {
			return plugin.Error(Name, errors.New("no kubernetes plugin in this server block"))
		}
		s, err := storeFor(k)
		if err != nil {
			return plugin.Error(Name, err)
		}
		k.APIConn = s
		return nil
	})
	return nil
}

// storeFor makes the Store for the kubernetes plugin's configuration, or
// says which of its options needs CoreDNS's own store.
func storeFor(k *kubernetes.Kubernetes) (*Store, error) {
	opts, err := readOptions(k)
	if err != nil {
		return nil, err
	}
	var refused []string
	for option, set := range map[string]bool{
		"pods verified":          opts.podsVerified,
		"labels":                 opts.labels,
		"namespace_labels":       opts.namespaceLabels,
		"zonal":                  opts.zonal,
		"multicluster":           opts.multicluster,
		"apiserver_max_inflight": opts.maxInflight,
		"endpoint":               len(k.APIServerList) > 0,
	} {
		if set {
			refused = append(refused, option)
		}
	}
	if len(refused) > 0 {
		slices.Sort(refused)
		return nil, fmt.Errorf("the kubernetes plugin's %q needs CoreDNS's own store: remove it or the kubestore directive", refused)
	}
	cfg, err := clientConfig(k)
	if err != nil {
		return nil, err
	}
	if opts.qps > 0 {
		cfg.QPS = float32(opts.qps)
	}
	if opts.burst > 0 {
		cfg.Burst = int(opts.burst)
	}
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return New(client, opts.endpoints), nil
}

// clientConfig is the plugin's connection to the apiserver, made as the
// plugin makes it: its kubeconfig, or in a pod the ServiceAccount's, in
// protobuf and with CoreDNS's User-Agent.
func clientConfig(k *kubernetes.Kubernetes) (*rest.Config, error) {
	if k.ClientConfig != nil {
		return k.ClientConfig.ClientConfig()
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, err
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.UserAgent = fmt.Sprintf("%s/%s git_commit:%s (%s/%s/%s)", coremain.CoreName, coremain.CoreVersion, coremain.GitCommit, runtime.GOOS, runtime.GOARCH, runtime.Version())
	return cfg, nil
}

// options are the parsed kubernetes stanza's settings the store depends
// on. The plugin keeps them unexported; they are read, never written,
// and a CoreDNS that renamed one is refused by name (kubestore_test.go
// parses each option and checks it is seen).
type options struct {
	endpoints, podsVerified, labels, namespaceLabels, zonal, multicluster, maxInflight bool
	qps                                                                                float64
	burst                                                                              int64
}

func readOptions(k *kubernetes.Kubernetes) (options, error) {
	v := reflect.ValueOf(k).Elem()
	var missing []string
	field := func(path ...string) reflect.Value {
		f := v
		for _, name := range path {
			if f = f.FieldByName(name); !f.IsValid() {
				missing = append(missing, fmt.Sprint(path))
				return reflect.Value{}
			}
		}
		return f
	}
	o := options{}
	if f := field("opts", "initEndpointsCache"); f.IsValid() {
		o.endpoints = f.Bool()
	}
	if f := field("podMode"); f.IsValid() {
		o.podsVerified = f.String() == "verified"
	}
	if f := field("opts", "labelSelector"); f.IsValid() {
		o.labels = !f.IsNil()
	}
	if f := field("opts", "namespaceLabelSelector"); f.IsValid() {
		o.namespaceLabels = !f.IsNil()
	}
	if f := field("opts", "zonal"); f.IsValid() {
		o.zonal = f.Bool()
	}
	if f := field("opts", "multiclusterZones"); f.IsValid() {
		o.multicluster = f.Len() > 0
	}
	if f := field("apiMaxInflight"); f.IsValid() {
		o.maxInflight = f.Int() > 0
	}
	if f := field("apiQPS"); f.IsValid() {
		o.qps = f.Float()
	}
	if f := field("apiBurst"); f.IsValid() {
		o.burst = f.Int()
	}
	if len(missing) > 0 {
		return options{}, fmt.Errorf("CoreDNS's kubernetes plugin has no %v: this kubestore was written for CoreDNS v1.15's", missing)
	}
	return o, nil
}

// The plugin's APIConn is CoreDNS's unexported dnsController interface;
// this fails to compile if Store stops implementing it.
var _ = kubernetes.Kubernetes{APIConn: (*Store)(nil)}
