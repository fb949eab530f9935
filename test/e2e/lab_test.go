package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sitegrid/sitegrid/internal/controlplane"
	"github.com/sitegrid/sitegrid/internal/gobuild"
	"github.com/sitegrid/sitegrid/internal/kubebin"
	labpkg "github.com/sitegrid/sitegrid/internal/lab"
	"github.com/sitegrid/sitegrid/internal/manager"
	"github.com/sitegrid/sitegrid/internal/process"
	"github.com/sitegrid/sitegrid/internal/testenv"
)

var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

// sitegridctl builds every command side by side, as `make build` does, and
// returns sitegridctl's path.
func sitegridctl(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "sitegrid-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := gobuild.Command(context.Background(), builtDir+"/", "./cmd/...")
		cmd.Dir = testenv.RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(builtDir, "sitegridctl")
}

type labRunner struct {
	t       *testing.T
	bin     string
	root    string
	workdir string
	// cwd is where sitegridctl runs; empty: the checkout.
	cwd string
}

// upLab starts a lab in a temporary workdir (`lab up --detach` with args,
// on a free apiserver port) and takes it down when the test ends.
func upLab(t *testing.T, args ...string) labRunner {
	t.Helper()
	testenv.Binaries(t)
	l := labRunner{t: t, bin: sitegridctl(t), root: testenv.RepoRoot(t), workdir: t.TempDir()}
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.dumpLogs()
		}
		_, _ = l.run("lab", "down")
	})
	l.must(append([]string{"lab", "up", "--detach", "--apiserver-port", strconv.Itoa(port)}, args...)...)
	return l
}

// dumpLogs prints the end of every log in the lab's workdir (control plane,
// manager, hubs, kwok, kube-proxy), for a failed test.
func (l labRunner) dumpLogs() {
	_ = filepath.WalkDir(l.workdir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		lines = lines[max(0, len(lines)-40):]
		rel, _ := filepath.Rel(l.workdir, path)
		l.t.Logf("--- last %d lines of %s:\n%s", len(lines), rel, strings.Join(lines, "\n"))
		return nil
	})
}

// clients returns the lab's admin kubeconfig, a clientset and a
// controller-runtime client knowing sitegrid's types.
func (l labRunner) clients() (string, kubernetes.Interface, client.Client) {
	l.t.Helper()
	kubeconfig := strings.TrimSpace(l.must("lab", "kubeconfig"))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		l.t.Fatal(err)
	}
	return kubeconfig, labClient(l.t, kubeconfig, nil), c
}

// createAll creates objects in order, failing the test on the first error.
func createAll(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

func (l labRunner) run(args ...string) (string, error) {
	l.t.Helper()
	if args[0] == "lab" && len(args) > 1 {
		// Before any "--": what follows it is a command's (lab exec).
		args = append([]string{args[0], args[1], "--workdir", l.workdir}, args[2:]...)
	}
	cmd := exec.Command(l.bin, args...)
	cmd.Dir = l.root
	if l.cwd != "" {
		cmd.Dir = l.cwd
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l labRunner) must(args ...string) string {
	l.t.Helper()
	out, err := l.run(args...)
	if err != nil {
		l.t.Fatalf("sitegridctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestLabLifecycle drives `sitegridctl lab` as a user would: up in the
// background from outside a checkout (the binaries come from the cache),
// kubectl against its kubeconfig, add and remove a node, refuse a second lab
// in the same workdir without touching the first one's log, and leave
// nothing behind after down.
func TestLabLifecycle(t *testing.T) {
	testenv.Binaries(t) // built once for every test, with progress
	lab := labRunner{t: t, bin: sitegridctl(t), root: testenv.RepoRoot(t), workdir: t.TempDir(), cwd: t.TempDir()}
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lab.run("lab", "down") })

	out := lab.must("lab", "up", "--detach", "--sites", "2", "--nodes-per-site", "2", "--apiserver-port", strconv.Itoa(port))
	for _, want := range []string{"[7/7] done", "site-1-node-1", "site-2-node-2", `NodeGroup "lab"`, "unit lab-site-2", "sitegridctl lab down"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up output lacks %q:\n%s", want, out)
		}
	}
	kubeconfig := strings.TrimSpace(lab.must("lab", "kubeconfig"))
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(testenv.Binaries(t).Path(kubebin.Kubectl), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Every Kubernetes binary reports its release, as Kubernetes' own build
	// stamps it: kubectl version parses the server's and prints both.
	pins, err := kubebin.ReadPins(lab.root)
	if err != nil {
		t.Fatal(err)
	}
	var versions struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(kubectl("version", "-o", "json")), &versions); err != nil {
		t.Fatal(err)
	}
	if want := pins.Versions["kube"]; versions.ClientVersion.GitVersion != want || versions.ServerVersion.GitVersion != want {
		t.Errorf("kubectl version: client %q, server %q, want both %s", versions.ClientVersion.GitVersion, versions.ServerVersion.GitVersion, want)
	}
	readyPerSite := func() map[string]int {
		perSite := map[string]int{}
		lines := kubectl("get", "nodes", "--no-headers", "-L", "sitegrid.io/site")
		for _, line := range strings.Split(strings.TrimSpace(lines), "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 && f[1] == "Ready" {
				perSite[f[len(f)-1]]++
			}
		}
		return perSite
	}
	if got := readyPerSite(); got["site-1"] != 2 || got["site-2"] != 2 || len(got) != 2 {
		t.Fatalf("Ready nodes per site = %v, want 2 in site-1 and 2 in site-2", got)
	}

	// The sites are NodeUnits of the lab's NodeGroup, and every node carries
	// its unit label.
	units := kubectl("get", "nodes", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,UNIT:.metadata.labels.lab")
	for _, want := range []string{"site-1-node-1   lab-site-1", "site-2-node-2   lab-site-2"} {
		if !strings.Contains(units, want) {
			t.Errorf("node unit labels lack %q:\n%s", want, units)
		}
	}
	sites := lab.must("site", "list", "--kubeconfig", kubeconfig)
	// Columns are as wide as the longest name.
	for _, want := range [][]string{{"lab-site-1", "edge", "2/2"}, {"lab-site-2", "edge", "2/2"}, {"lab", "2", "2/2"}} {
		if !lineHas(sites, want...) {
			t.Errorf("site list lacks a line with %q:\n%s", want, sites)
		}
	}

	// SuperEdge's v1alpha1 demos apply unchanged (the lab registers the
	// conversion webhook), and kubectl lists the units in v1alpha1, SuperEdge's
	// default unit among them.
	for _, f := range []string{"nodeunit_demo.yaml", "nodegroup_demo.yaml"} {
		kubectl("apply", "-f", filepath.Join(lab.root, "test", "testdata", "superedge", f))
	}
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if out := kubectl("get", "nodeunits.v1alpha1.site.superedge.io"); !strings.Contains(out, "nodeunit-demo") || !lineHas(out, "unit-node-all", "other", "4/4") {
			return fmt.Errorf("kubectl get nodeunits.v1alpha1.site.superedge.io lacks the demo or unit-node-all with every node:\n%s", out)
		}
		return nil
	})

	// README's service group sample runs one copy per site.
	kubectl("apply", "-f", filepath.Join(lab.root, "config", "samples", "echo-grid.yaml"))
	testenv.Eventually(t, 90*time.Second, func(ctx context.Context) error {
		out := kubectl("get", "pods", "-l", "app=echo", "--no-headers", "-o", "custom-columns=UNIT:.metadata.labels.superedge\\.io/grid-unit,PHASE:.status.phase,NODE:.spec.nodeName")
		perUnit := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[1] == "Running" && strings.HasPrefix(f[2], strings.TrimPrefix(f[0], "lab-")) {
				perUnit[f[0]]++
			}
		}
		if perUnit["lab-site-1"] != 2 || perUnit["lab-site-2"] != 1 {
			return fmt.Errorf("running echo pods per site %v, want 2 in lab-site-1 and 1 in lab-site-2:\n%s", perUnit, out)
		}
		return nil
	})
	if status := lab.must("grid", "status", "echo", "--kubeconfig", kubeconfig); !strings.Contains(status, "lab-site-2") {
		t.Errorf("grid status:\n%s", status)
	}

	lab.must("lab", "add-node", "site-2-node-3", "--labels", "sitegrid.io/site=site-2")
	if got := readyPerSite(); got["site-2"] != 3 {
		t.Fatalf("after add-node, Ready nodes per site = %v, want 3 in site-2", got)
	}
	testenv.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if out, _ := lab.run("site", "list", "--kubeconfig", kubeconfig); !lineHas(out, "lab-site-2", "edge", "3/3") {
			return fmt.Errorf("site list does not count the new node:\n%s", out)
		}
		return nil
	})
	if out, err := lab.run("lab", "add-node", "Bad_Name"); err == nil || !strings.Contains(out, "node name") {
		t.Errorf("add-node with an invalid name: err=%v, output %q; want a message about the name", err, out)
	}
	status := lab.must("lab", "status")
	for _, want := range []string{"kube-apiserver", "kwok/site-2-node-3", "sitegrid-hub/site-1-node-1", "sitegrid-manager", "site-2-node-3"} {
		if !strings.Contains(status, want) {
			t.Errorf("lab status lacks %q:\n%s", want, status)
		}
	}
	lab.must("lab", "remove-node", "site-2-node-3")
	if got := readyPerSite(); got["site-2"] != 2 {
		t.Fatalf("after remove-node, Ready nodes per site = %v, want 2 in site-2", got)
	}

	// A second lab in the same workdir is refused, and the first keeps running
	// and keeps its log.
	if out, err := lab.run("lab", "up", "--apiserver-port", strconv.Itoa(port+1)); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("second lab up in one workdir: err=%v, output:\n%s", err, out)
	}
	logBefore, err := os.ReadFile(filepath.Join(lab.workdir, "lab.log"))
	if err != nil || !strings.Contains(string(logBefore), "lab ready") {
		t.Fatalf("the detached lab's log: %v\n%s", err, logBefore)
	}
	if out, err := lab.run("lab", "up", "--detach", "--apiserver-port", strconv.Itoa(port+1)); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("second lab up --detach in one workdir: err=%v, output:\n%s", err, out)
	}
	if logAfter, _ := os.ReadFile(filepath.Join(lab.workdir, "lab.log")); !strings.HasPrefix(string(logAfter), string(logBefore)) {
		t.Errorf("a refused lab up --detach changed the running lab's log:\nbefore:\n%s\nafter:\n%s", logBefore, logAfter)
	}
	if out, err := lab.run("site", "health", "lab-site-9", "--kubeconfig", kubeconfig); err == nil || !strings.Contains(out, "no such unit") {
		t.Errorf("site health of a unit that does not exist: err=%v, output %q", err, out)
	}

	pids := labPIDs(t, lab.workdir)
	if len(pids) < 6 {
		t.Fatalf("lab.json lists %d processes, want at least 6", len(pids))
	}
	edge, err := labpkg.EdgeNodes(context.Background(), lab.workdir)
	if err != nil || len(edge) != 4 {
		t.Fatalf("the lab reports edge nodes %+v (%v), want 4", edge, err)
	}
	for _, n := range edge {
		pids["sitegrid-hub/"+n.Name], pids["kwok/"+n.Name] = n.HubPID, n.KubeletPID
	}
	if out, err := lab.run("lab", "partition", "site-9"); err == nil || !strings.Contains(out, "neither a lab node nor a site") {
		t.Errorf("partition of an unknown site: err=%v, output %q", err, out)
	}
	lab.must("lab", "down")
	for name, pid := range pids {
		if process.Alive(pid) {
			t.Errorf("%s (pid %d) still running after lab down", name, pid)
		}
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still listening after lab down", port)
	}
	if _, err := os.Stat(filepath.Join(lab.workdir, "lab.json")); !os.IsNotExist(err) {
		t.Errorf("lab state left behind: %v", err)
	}
	if _, err := lab.run("lab", "kubeconfig"); err == nil {
		t.Error("lab kubeconfig succeeded after lab down")
	}
}

// TestLabRefusesTakenPort: a lab that cannot start says why and leaves
// nothing running.
func TestLabRefusesTakenPort(t *testing.T) {
	testenv.Binaries(t)
	lab := labRunner{t: t, bin: sitegridctl(t), root: testenv.RepoRoot(t), workdir: t.TempDir()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	out, err := lab.run("lab", "up", "--detach", "--apiserver-port", strconv.Itoa(port))
	if err == nil {
		t.Fatalf("lab up on a taken port succeeded:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("port %d", port)) || !strings.Contains(out, "in use") {
		t.Errorf("error does not say the port is in use:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if _, err := os.Stat(filepath.Join(lab.workdir, "lab.json")); os.IsNotExist(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(lab.workdir, "controlplane")); !os.IsNotExist(err) {
		t.Errorf("failed lab left its control plane folder: %v", err)
	}
	if left, err := os.ReadDir(lab.workdir); err == nil && len(left) > 0 {
		names := []string{}
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("failed lab left files in its workdir: %v", names)
	}
	if out, err := lab.run("lab", "status"); err == nil {
		t.Errorf("lab status after a failed start succeeded:\n%s", out)
	}
}

func labPIDs(t *testing.T, workdir string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(workdir, "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		PID        int `json:"pid"`
		Components []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{"lab owner": s.PID}
	for _, c := range s.Components {
		pids[c.Name] = c.PID
	}
	return pids
}
