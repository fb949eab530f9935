package selfclient

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// TestDecodesCoreJSON: the apiserver's JSON of a Node list, a Service and a
// Secret decodes into the hub's types with what the hub reads, and copies
// are deep.
func TestDecodesCoreJSON(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := addCore(scheme); err != nil {
		t.Fatal(err)
	}
	codecs := serializer.NewCodecFactory(scheme)
	decode := func(v any) runtime.Object {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := codecs.UniversalDeserializer().Decode(b, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return obj
	}
	nodes := decode(&corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "7"},
		Items: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"site": "a"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.1"}}, Phase: "Running"}}}}).(*NodeList)
	if nodes.ResourceVersion != "7" || len(nodes.Items) != 1 || nodes.Items[0].Labels["site"] != "a" ||
		nodes.Items[0].Status.Addresses[0] != (NodeAddress{Type: NodeInternalIP, Address: "198.18.1.1"}) {
		t.Errorf("node list %+v", nodes)
	}
	c := nodes.DeepCopyObject().(*NodeList)
	c.Items[0].Labels["site"], c.Items[0].Status.Addresses[0].Address = "b", "x"
	if nodes.Items[0].Labels["site"] != "a" || nodes.Items[0].Status.Addresses[0].Address != "198.18.1.1" {
		t.Error("a copied node list shares its items with the original")
	}
	svc := decode(&corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", Annotations: map[string]string{"k": "v"}}, Spec: corev1.ServiceSpec{ClusterIP: "198.19.128.9"}}).(*Service)
	if svc.Namespace != "ns" || svc.Annotations["k"] != "v" {
		t.Errorf("service %+v", svc)
	}
	sec := decode(&corev1.Secret{TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "k"},
		Data: map[string][]byte{"keys": []byte("abc")}}).(*Secret)
	sc := sec.DeepCopyObject().(*Secret)
	sc.Data["keys"][0] = 'x'
	if string(sec.Data["keys"]) != "abc" {
		t.Errorf("secret %q after changing a copy", sec.Data["keys"])
	}
}
