package nodepatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// TestStrategiesMatchNode: the table holds exactly the patch strategies of
// core/v1 Node's struct tags, which the apiserver applies.
func TestStrategiesMatchNode(t *testing.T) {
	if got := strategiesOf(reflect.TypeOf(corev1.Node{})); !maps.Equal(got, NodeStrategies) {
		t.Errorf("core/v1 Node's patch strategies are %v, the table has %v", got, NodeStrategies)
	}
}

// TestStrategiesMatchPod: the same for Pod's metadata and status.
func TestStrategiesMatchPod(t *testing.T) {
	got := strategiesOf(reflect.TypeOf(corev1.Pod{}))
	maps.DeleteFunc(got, func(path string, _ Strategy) bool { return strings.HasPrefix(path, "spec.") })
	if !maps.Equal(got, PodStrategies) {
		t.Errorf("core/v1 Pod's metadata and status patch strategies are %v, the table has %v", got, PodStrategies)
	}
}

// TestPodStatusPatchesAsStrategicPatch: kubelet-style pod status patches
// (the status manager's two-way patch of metadata.uid and status) give
// strategicpatch's bytes.
func TestPodStatusPatchesAsStrategicPatch(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	base := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "topo", UID: "u1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "web", Image: "echo:v1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.2", PodIPs: []corev1.PodIP{{IP: "198.19.1.2"}},
			HostIPs: []corev1.HostIP{{IP: "198.18.1.10"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Ready: true, RestartCount: 0,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}},
	}
	rebooted := *base.DeepCopy()
	rebooted.Status.Conditions[0].Status = corev1.ConditionFalse
	rebooted.Status.Conditions = append(rebooted.Status.Conditions, corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue})
	rebooted.Status.ContainerStatuses[0].RestartCount = 1
	rebooted.Status.ContainerStatuses[0].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Unknown"}}
	moved := *rebooted.DeepCopy()
	moved.Status.PodIP, moved.Status.PodIPs = "198.19.1.3", []corev1.PodIP{{IP: "198.19.1.3"}}
	moved.Status.Conditions = moved.Status.Conditions[1:]
	for name, pair := range map[string][2]corev1.Pod{"restarted": {base, rebooted}, "new address, condition gone": {rebooted, moved}, "back": {moved, base}} {
		t.Run(name, func(t *testing.T) {
			statusOf := func(p corev1.Pod) []byte {
				b, err := json.Marshal(corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: p.UID}, Status: p.Status})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			patch, err := strategicpatch.CreateTwoWayMergePatch(statusOf(pair[0]), statusOf(pair[1]), corev1.Pod{})
			if err != nil {
				t.Fatal(err)
			}
			original, err := json.Marshal(pair[0])
			if err != nil {
				t.Fatal(err)
			}
			want, err := strategicpatch.StrategicMergePatch(original, patch, &corev1.Pod{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ApplyPod(original, patch)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("patch %s\nstrategicpatch: %s\nApplyPod:       %s (%v)", patch, want, got, err)
			}
		})
	}
}

// strategiesOf reads the patch strategies of a core/v1 type's struct tags.
func strategiesOf(root reflect.Type) map[string]Strategy {
	got := map[string]Strategy{}
	var walk func(reflect.Type, string, map[reflect.Type]bool)
	walk = func(typ reflect.Type, path string, seen map[reflect.Type]bool) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		defer delete(seen, typ)
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			p := path
			if name != "" {
				p = join(path, name)
			}
			if s := f.Tag.Get("patchStrategy"); s != "" {
				got[p] = Strategy{Strategy: s, MergeKey: f.Tag.Get("patchMergeKey")}
			}
			walk(f.Type, p, seen)
		}
	}
	walk(root, "", map[reflect.Type]bool{})
	return got
}

// same applies patch to original with Apply and with strategicpatch, and
// fails unless both give the same bytes (or both refuse it).
func same(t *testing.T, original, patch []byte) {
	t.Helper()
	want, wantErr := strategicpatch.StrategicMergePatch(original, patch, &corev1.Node{})
	got, err := Apply(original, patch)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("original %s\npatch %s\nstrategicpatch: %s (%v)\nnodepatch:      %s (%v)", original, patch, want, wantErr, got, err)
	}
}

// TestDirectives: every directive, against strategicpatch.
func TestDirectives(t *testing.T) {
	node := `{"metadata":{"name":"n","labels":{"a":"1","b":"2"},"finalizers":["x","y","z"],
		"ownerReferences":[{"uid":"u1","name":"o1"},{"uid":"u2","name":"o2"}]},
		"spec":{"podCIDRs":["10.0.0.0/24"],"taints":[{"key":"k","effect":"NoSchedule"}]},
		"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"MemoryPressure","status":"False"},{"type":"DiskPressure","status":"False"}],
		"addresses":[{"type":"InternalIP","address":"198.18.1.1"},{"type":"Hostname","address":"n"}],
		"capacity":{"cpu":"4"},"images":[{"names":["a"]}],"nodeInfo":{"kubeletVersion":"v1"}}}`
	for name, patch := range map[string]string{
		"heartbeat":                  `{"status":{"conditions":[{"type":"Ready","lastHeartbeatTime":"2026-11-22T00:00:00Z"}]}}`,
		"set element order":          `{"status":{"$setElementOrder/conditions":[{"type":"DiskPressure"},{"type":"Ready"},{"type":"MemoryPressure"}],"conditions":[{"type":"Ready","status":"False"}]}}`,
		"order adds an item":         `{"status":{"$setElementOrder/addresses":[{"type":"ExternalIP"},{"type":"InternalIP"},{"type":"Hostname"}],"addresses":[{"type":"ExternalIP","address":"198.18.9.9"}]}}`,
		"order without list":         `{"status":{"$setElementOrder/conditions":[{"type":"DiskPressure"},{"type":"MemoryPressure"},{"type":"Ready"}]}}`,
		"delete item":                `{"status":{"conditions":[{"type":"MemoryPressure","$patch":"delete"}]}}`,
		"replace list":               `{"status":{"addresses":[{"type":"Hostname","address":"m"},{"$patch":"replace"}]}}`,
		"merge directive in list":    `{"status":{"addresses":[{"$patch":"merge"}]}}`,
		"replace map":                `{"status":{"nodeInfo":{"$patch":"replace","osImage":"x"}}}`,
		"delete map":                 `{"status":{"nodeInfo":{"$patch":"delete"}}}`,
		"unknown directive":          `{"status":{"nodeInfo":{"$patch":"frobnicate"}}}`,
		"retain keys":                `{"status":{"$retainKeys":["capacity","conditions"],"capacity":{"cpu":"8"}}}`,
		"retain keys violated":       `{"status":{"$retainKeys":["capacity"],"images":[]}}`,
		"retain keys not a list":     `{"status":{"$retainKeys":"capacity"}}`,
		"delete from primitives":     `{"metadata":{"$deleteFromPrimitiveList/finalizers":["y"]}}`,
		"add primitives":             `{"metadata":{"finalizers":["w","x"]}}`,
		"primitives ordered":         `{"metadata":{"$setElementOrder/finalizers":["z","w","x","y"],"finalizers":["w"]}}`,
		"malformed prefix":           `{"metadata":{"$deleteFromPrimitiveList":["y"]}}`,
		"null deletes":               `{"metadata":{"labels":{"a":null}},"status":{"images":null}}`,
		"null in new field":          `{"status":{"config":{"active":null,"error":"e"}}}`,
		"type change":                `{"status":{"capacity":"none"}}`,
		"replace unstrategic list":   `{"status":{"images":[{"names":["b"]}]},"spec":{"taints":[]}}`,
		"new list with directives":   `{"status":{"volumesAttached":[{"name":"v","$patch":"delete"},{"name":"w","devicePath":"/d"}]}}`,
		"missing merge key":          `{"status":{"conditions":[{"status":"True"}]}}`,
		"order mismatch":             `{"status":{"$setElementOrder/conditions":[{"type":"Ready"}],"conditions":[{"type":"DiskPressure","status":"True"}]}}`,
		"merge ownerReferences":      `{"metadata":{"ownerReferences":[{"uid":"u3","name":"o3"},{"uid":"u1","name":"o1b"}]}}`,
		"pod CIDRs":                  `{"spec":{"podCIDRs":["10.0.1.0/24"]}}`,
		"empty":                      `{}`,
		"null patch":                 `null`,
		"not json":                   `{"status":`,
		"list of lists":              `{"metadata":{"finalizers":[["a"]]}}`,
		"mixed list":                 `{"metadata":{"finalizers":[1,"a"]}}`,
		"numbers":                    `{"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":10250}}}}`,
		"whole status":               `{"status":{"phase":"Running","conditions":[],"$setElementOrder/conditions":[]}}`,
		"delete item by unknown key": `{"status":{"conditions":[{"type":"PIDPressure","$patch":"delete"}]}}`,
	} {
		t.Run(name, func(t *testing.T) { same(t, []byte(node), []byte(patch)) })
	}
}

// TestKubeletPatches: patches made as the kubelet makes them
// (CreateTwoWayMergePatch of its old and new node), applied to its old node
// and to a node that changed meanwhile, give what the apiserver gives.
func TestKubeletPatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		old, updated, current := randomNode(r), randomNode(r), randomNode(r)
		updated.Name, current.Name = old.Name, old.Name
		ob, nb, cb := mustJSON(t, old), mustJSON(t, updated), mustJSON(t, current)
		patch, err := strategicpatch.CreateTwoWayMergePatch(ob, nb, &corev1.Node{})
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		same(t, ob, patch)
		same(t, cb, patch)
	}
}

// FuzzApply: whatever the input, Apply does not panic, and where the
// apiserver's strategicpatch applies a patch, Apply gives the same bytes.
// (Where strategicpatch refuses, Apply may accept fields Node does not
// have: the hub's cached nodes come from the apiserver and have none.)
func FuzzApply(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		a, b := mustJSON(f, randomNode(r)), mustJSON(f, randomNode(r))
		p, err := strategicpatch.CreateTwoWayMergePatch(a, b, &corev1.Node{})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(a, p)
	}
	f.Add([]byte(`{"status":{"conditions":[{"type":"A"}]}}`), []byte(`{"status":{"conditions":[{"type":{"x":1}}]}}`))
	f.Fuzz(func(t *testing.T, original, patch []byte) {
		// strategicpatch walks a patch in map order: a patch that both sets
		// a list and deletes from it has two outcomes, by chance.
		if orderDependent(patch) {
			t.Skip("the outcome depends on map order")
		}
		outcomes := map[string]bool{}
		for range 8 {
			func() {
				defer func() {
					if recover() != nil {
						outcomes["error"] = true
					}
				}()
				want, err := strategicpatch.StrategicMergePatch(bytes.Clone(original), bytes.Clone(patch), &corev1.Node{})
				if err != nil {
					outcomes["error"] = true
					return
				}
				outcomes[string(want)] = true
			}()
		}
		got, err := Apply(original, patch)
		if err != nil && !outcomes["error"] {
			t.Fatalf("original %s\npatch %s\nstrategicpatch: %v\nnodepatch: %v", original, patch, outcomes, err)
		}
		onlyRefused := len(outcomes) == 1 && outcomes["error"]
		if err == nil && !onlyRefused && !outcomes[string(got)] {
			t.Fatalf("original %s\npatch %s\nstrategicpatch: %v\nnodepatch:      %s", original, patch, outcomes, got)
		}
	})
}

// orderDependent reports a patch with a map holding both a field and a
// $deleteFromPrimitiveList/ directive for it.
func orderDependent(patch []byte) bool {
	var v any
	if json.Unmarshal(patch, &v) != nil {
		return false
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if field, ok := strings.CutPrefix(k, deletePrefix+"/"); ok {
					if _, both := v[field]; both {
						return true
					}
				}
				if walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomNode draws a node whose status lists have random members, order and
// values, as kubelets and controllers change them.
func randomNode(r *rand.Rand) *corev1.Node {
	pick := func(all []string) []string {
		var out []string
		for _, i := range r.Perm(len(all)) {
			if r.IntN(3) > 0 {
				out = append(out, all[i])
			}
		}
		return out
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{}, Annotations: map[string]string{}}}
	for _, k := range pick([]string{"a", "b", "c"}) {
		n.Labels[k] = fmt.Sprint(r.IntN(2))
	}
	for _, k := range pick([]string{"x", "y"}) {
		n.Annotations[k] = fmt.Sprint(r.IntN(2))
	}
	n.Finalizers = pick([]string{"f1", "f2", "f3"})
	for _, u := range pick([]string{"u1", "u2"}) {
		n.OwnerReferences = append(n.OwnerReferences, metav1.OwnerReference{UID: types.UID(u), Name: "o" + fmt.Sprint(r.IntN(2)), Kind: "K", APIVersion: "v1"})
	}
	n.Spec.PodCIDRs = pick([]string{"10.0.0.0/24", "fd00::/64"})
	for _, k := range pick([]string{"t1", "t2"}) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
	}
	for _, c := range pick([]string{"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}) {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeConditionType(c),
			Status: corev1.ConditionStatus([]string{"True", "False", "Unknown"}[r.IntN(3)]), Reason: fmt.Sprint("R", r.IntN(2)),
			LastHeartbeatTime: metav1.Unix(int64(r.IntN(3))*1000, 0)})
	}
	for _, a := range pick([]string{"InternalIP", "ExternalIP", "Hostname", "InternalDNS"}) {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(a), Address: fmt.Sprint("198.18.0.", r.IntN(3))})
	}
	n.Status.Capacity = corev1.ResourceList{}
	for _, k := range pick([]string{"cpu", "memory", "pods"}) {
		n.Status.Capacity[corev1.ResourceName(k)] = resource.MustParse(fmt.Sprint(r.IntN(3) + 1))
	}
	for _, img := range pick([]string{"i1", "i2", "i3"}) {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{img}, SizeBytes: int64(r.IntN(1 << 40))})
	}
	for _, v := range pick([]string{"v1", "v2"}) {
		n.Status.VolumesInUse = append(n.Status.VolumesInUse, corev1.UniqueVolumeName(v))
		n.Status.VolumesAttached = append(n.Status.VolumesAttached, corev1.AttachedVolume{Name: corev1.UniqueVolumeName(v), DevicePath: "/dev/" + v})
	}
	if r.IntN(2) == 0 {
		n.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: fmt.Sprint("v1.", r.IntN(3)), OSImage: "os"}
	}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(10250 + r.IntN(2))
	return n
}
