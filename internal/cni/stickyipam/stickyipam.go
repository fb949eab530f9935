// Package stickyipam is a CNI IPAM plugin that gives a pod back the address
// it had when its node lost power. After a reboot every pod gets a new
// sandbox; with plain host-local it would get a new IP, and while the site
// is cut off from the cloud nobody can tell the site's EndpointSlices (all
// served from the hubs' caches) where the pod is now. Edge platforms keep
// pod IPs across reboots for that reason.
//
// It delegates allocation to host-local, whose state must be on storage a
// reboot clears (dataDir under /run), and remembers each pod's address (by
// pod UID, from the CNI_ARGS the container runtime passes) on disk. On ADD
// for a pod it knows, it asks host-local for the same address (host-local's
// IP argument); if that address is taken it takes whatever host-local gives.
// A DEL never drops a pod's record (see Run): a sandbox that died with the
// power, or failed during the boot and is tried again, gets the pod's
// address back.
package stickyipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
)

// Config is the plugin's part of the network configuration ("ipam").
type Config struct {
	Type string `json:"type"`
	// StateFile keeps pod UID → address, on storage that survives reboots.
	StateFile string `json:"stateFile"`
	// Delegate is the host-local IPAM configuration that allocates.
	Delegate json.RawMessage `json:"delegate"`
}

// Env is what the runtime passes a CNI plugin besides its stdin.
type Env struct {
	Command, ContainerID, Netns, IfName, Args, Path string
}

// EnvFromOS reads the CNI variables.
func EnvFromOS() Env {
	return Env{Command: os.Getenv("CNI_COMMAND"), ContainerID: os.Getenv("CNI_CONTAINERID"), Netns: os.Getenv("CNI_NETNS"),
		IfName: os.Getenv("CNI_IFNAME"), Args: os.Getenv("CNI_ARGS"), Path: os.Getenv("CNI_PATH")}
}

// lease is one pod's address and the sandbox holding it.
type lease struct {
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
}

// Run carries out one CNI command: netconf is the network configuration on
// stdin; what the delegate prints (the result, or a CNI error) goes to out.
func Run(env Env, netconf []byte, out io.Writer) error {
	var net struct {
		IPAM Config `json:"ipam"`
	}
	if err := json.Unmarshal(netconf, &net); err != nil {
		return fmt.Errorf("network configuration: %w", err)
	}
	cfg := net.IPAM
	if len(cfg.Delegate) == 0 || cfg.StateFile == "" {
		return errors.New("ipam: stateFile and delegate (a host-local configuration) are required")
	}
	delegated, err := delegateConf(netconf, cfg.Delegate)
	if err != nil {
		return err
	}
	var delegateType struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(cfg.Delegate, &delegateType); err != nil || delegateType.Type == "" {
		return errors.New("ipam: delegate has no type")
	}
	plugin, err := findPlugin(env.Path, delegateType.Type)
	if err != nil {
		return err
	}
	// Only an ADD reads or writes the records. A DEL never drops a pod's:
	// it is also the runtime cleaning up a sandbox that died with the
	// power, or one that failed while the node boots and is tried again,
	// and a pod that lost its record would take another's address. A
	// record outlives its pod until host-local gives that address to
	// another pod.
	if env.Command != "ADD" {
		res, err := invoke(plugin, env, env.Args, delegated)
		if err != nil {
			return err
		}
		_, err = out.Write(res)
		return err
	}
	unlock, err := lock(cfg.StateFile)
	if err != nil {
		return err
	}
	defer unlock()
	leases, err := readLeases(cfg.StateFile)
	if err != nil {
		return err
	}
	pod := podKey(env.Args)
	var res []byte
	if l, ok := leases[pod]; ok && pod != "" {
		res, err = invoke(plugin, env, env.Args+";IP="+l.IP, delegated)
	}
	if res == nil || err != nil {
		// Unknown pod, or its address is taken: any address.
		if res, err = invoke(plugin, env, env.Args, delegated); err != nil {
			return err
		}
	}
	ip, err := firstIP(res)
	if err != nil {
		return err
	}
	if pod != "" {
		for k, l := range leases {
			if l.IP == ip {
				delete(leases, k) // another pod's old address, now this one's
			}
		}
		leases[pod] = lease{IP: ip, ContainerID: env.ContainerID}
		if err := writeLeases(cfg.StateFile, leases); err != nil {
			return err
		}
	}
	_, err = out.Write(res)
	return err
}

// delegateConf is the network configuration with ipam replaced by the
// delegate's.
func delegateConf(netconf []byte, delegate json.RawMessage) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(netconf, &m); err != nil {
		return nil, err
	}
	m["ipam"] = delegate
	return json.Marshal(m)
}

// podKey names the pod of a sandbox from CNI_ARGS: its UID, else
// namespace/name.
func podKey(args string) string {
	kv := map[string]string{}
	for _, part := range strings.Split(args, ";") {
		if k, v, ok := strings.Cut(part, "="); ok {
			kv[k] = v
		}
	}
	if uid := kv["K8S_POD_UID"]; uid != "" {
		return uid
	}
	if kv["K8S_POD_NAME"] != "" {
		return kv["K8S_POD_NAMESPACE"] + "/" + kv["K8S_POD_NAME"]
	}
	return ""
}

func findPlugin(path, name string) (string, error) {
	if strings.ContainsAny(name, "/\\") {
		return "", fmt.Errorf("ipam: delegate type %q is not a plugin name", name)
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("ipam: plugin %s not found in CNI_PATH %q", name, path)
}

// invoke runs the delegate with args as its CNI_ARGS; its output is the
// result, or the CNI error it printed.
func invoke(plugin string, env Env, args string, netconf []byte) ([]byte, error) {
	cmd := exec.Command(plugin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+env.Command, "CNI_CONTAINERID="+env.ContainerID, "CNI_NETNS="+env.Netns,
		"CNI_IFNAME="+env.IfName, "CNI_ARGS="+args, "CNI_PATH="+env.Path)
	cmd.Stdin = bytes.NewReader(netconf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	res, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("%s %s: %v: %s%s", filepath.Base(plugin), env.Command, err, res, stderr.Bytes())
	}
	return res, nil
}

func firstIP(result []byte) (string, error) {
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(result, &r); err != nil || len(r.IPs) == 0 {
		return "", fmt.Errorf("ipam: the delegate's result holds no address: %s", result)
	}
	ip, _, _ := strings.Cut(r.IPs[0].Address, "/")
	return ip, nil
}

func lock(stateFile string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(stateFile+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { _ = f.Close() }, nil
}

func readLeases(file string) (map[string]lease, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]lease{}, nil
	} else if err != nil {
		return nil, err
	}
	leases := map[string]lease{}
	if err := json.Unmarshal(data, &leases); err != nil {
		return nil, fmt.Errorf("ipam state %s is damaged: %w", file, err)
	}
	return leases, nil
}

func writeLeases(file string, leases map[string]lease) error {
	return atomicfile.WriteJSON(file, leases, 0o600)
}
