package join

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
)

// record is what a join changed on the node, kept in the hub's state
// directory: leave undoes it exactly.
type record struct {
	NodeName string `json:"nodeName"`
	Init     string `json:"init"`
	// Changed are files the join rewrote, each with its backup.
	Changed []changed `json:"changed,omitempty"`
	// Created are files and directories the join made; removed on leave.
	Created []string `json:"created,omitempty"`
	// Units are the systemd units the join enabled; RestartUnits those it
	// restarted (and leave restarts again).
	Units        []string `json:"units,omitempty"`
	RestartUnits []string `json:"restartUnits,omitempty"`
}

type changed struct {
	Path   string      `json:"path"`
	Backup string      `json:"backup"`
	Mode   os.FileMode `json:"mode"`
}

// create writes a file the node did not have.
func (r *record) create(path string, data []byte, mode os.FileMode) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists already: left from another install? remove it or run sitegrid-hub leave", path)
	}
	if err := r.mkdirAll(filepath.Dir(path)); err != nil {
		return err
	}
	r.Created = append(r.Created, path)
	return atomicfile.Write(path, data, mode)
}

// mkdirAll makes dir and records the outermost directory it made.
func (r *record) mkdirAll(dir string) error {
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		top = d
	}
	if top == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.Created = append(r.Created, top)
	return nil
}

// pointAtHub backs kubeconfig up and points its current context's cluster
// at the hub, verified by the cluster CA; its user (the component's own
// credential) stays as it is.
func (r *record) pointAtHub(l layout, kubeconfig, hubURL string, caPEM []byte) error {
	fi, err := os.Stat(kubeconfig)
	if err != nil {
		return err
	}
	original, err := os.ReadFile(kubeconfig)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.Load(original)
	if err != nil {
		return fmt.Errorf("%s: %w", kubeconfig, err)
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return fmt.Errorf("%s has no current context %q", kubeconfig, cfg.CurrentContext)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return fmt.Errorf("%s: context %q names no cluster", kubeconfig, cfg.CurrentContext)
	}
	cluster.Server = hubURL
	cluster.CertificateAuthority, cluster.CertificateAuthorityData, cluster.TLSServerName = "", caPEM, ""
	cluster.InsecureSkipTLSVerify = false
	updated, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	backup := l.backup(strconv.Itoa(len(r.Changed)) + "-" + filepath.Base(kubeconfig))
	if err := os.MkdirAll(filepath.Dir(backup), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(backup, original, 0o600); err != nil {
		return err
	}
	r.Changed = append(r.Changed, changed{Path: kubeconfig, Backup: backup, Mode: fi.Mode().Perm()})
	return atomicfile.Write(kubeconfig, updated, fi.Mode().Perm())
}

func (r *record) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteJSON(path, r, 0o600)
}

func loadRecord(path string) (*record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no join record at %s: this node was not joined with sitegrid-hub join", path)
	}
	if err != nil {
		return nil, err
	}
	var r record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// undo restores every changed file from its backup, byte for byte and
// with its mode, then removes what the join created, newest first.
func (r *record) undo() error {
	var errs []error
	for _, c := range r.Changed {
		data, err := os.ReadFile(c.Backup)
		if err == nil {
			err = atomicfile.Write(c.Path, data, c.Mode)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", c.Path, err))
		}
	}
	if len(errs) > 0 {
		// The backups stay while a file could not be restored.
		return errors.Join(errs...)
	}
	for i := len(r.Created) - 1; i >= 0; i-- {
		if err := os.RemoveAll(r.Created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
