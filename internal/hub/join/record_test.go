package join

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// A kubeconfig pointed at the hub keeps its user; undoing the record gives
// every file back byte for byte, with its mode, and removes what the join
// created, directories included.
func TestRecordPointAtHubAndUndo(t *testing.T) {
	root := t.TempDir()
	l := layout{root}
	kubeconfig := filepath.Join(root, "kubelet.conf")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cloud"] = &clientcmdapi.Cluster{Server: "https://198.18.0.1:6443", CertificateAuthority: "/etc/kubernetes/pki/ca.crt"}
	cfg.AuthInfos["kubelet"] = &clientcmdapi.AuthInfo{ClientCertificate: "/var/lib/kubelet/pki/kubelet-client-current.pem", ClientKey: "/var/lib/kubelet/pki/kubelet-client-current.pem"}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "cloud", AuthInfo: "kubelet"}
	cfg.CurrentContext = "default"
	original, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeconfig, original, 0o640); err != nil {
		t.Fatal(err)
	}
	rec := &record{}
	// As Join does: the hub's state directory first, then its files.
	if err := rec.mkdirAll(l.pki()); err != nil {
		t.Fatal(err)
	}
	if err := rec.create(l.config(), []byte("nodeName: a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rec.create(l.config(), []byte("again"), 0o600); err == nil {
		t.Fatal("a file the join would overwrite was overwritten")
	}
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if err := rec.pointAtHub(l, kubeconfig, "https://127.0.0.1:10290", ca); err != nil {
		t.Fatal(err)
	}
	joined, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if c := joined.Clusters["cloud"]; c.Server != "https://127.0.0.1:10290" || !bytes.Equal(c.CertificateAuthorityData, ca) || c.CertificateAuthority != "" {
		t.Fatalf("cluster after the join: %+v", c)
	}
	if u := joined.AuthInfos["kubelet"]; u.ClientCertificate != cfg.AuthInfos["kubelet"].ClientCertificate {
		t.Fatalf("the kubelet's credential changed: %+v", u)
	}
	if err := rec.undo(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, original) {
		t.Fatalf("restored kubeconfig differs:\n%s", after)
	}
	if fi, _ := os.Stat(kubeconfig); fi.Mode().Perm() != 0o640 {
		t.Fatalf("restored mode %v, want 0640", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "kubelet.conf" {
		t.Fatalf("left after undo: %v", entries)
	}
}

// SuperEdge points kube-proxy at application-grid-wrapper over plain HTTP
// on loopback, its ServiceAccount token left in the kubeconfig: the join
// makes that the hub over TLS, verified by the cluster CA, with the token.
func TestRecordPointsSuperEdgeWrapperKubeconfigAtHub(t *testing.T) {
	root := t.TempDir()
	kubeconfig := filepath.Join(root, "kubeconfig.conf")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: "http://127.0.0.1:51006"}
	cfg.AuthInfos["default"] = &clientcmdapi.AuthInfo{TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if err := (&record{}).pointAtHub(layout{root}, kubeconfig, "https://127.0.0.1:10290", ca); err != nil {
		t.Fatal(err)
	}
	joined, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if c := joined.Clusters["default"]; c.Server != "https://127.0.0.1:10290" || !bytes.Equal(c.CertificateAuthorityData, ca) {
		t.Fatalf("cluster after the join: %+v", c)
	}
	if u := joined.AuthInfos["default"]; u.TokenFile != cfg.AuthInfos["default"].TokenFile {
		t.Fatalf("kube-proxy's token changed: %+v", u)
	}
}
