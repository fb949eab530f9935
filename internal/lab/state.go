// Package lab runs sitegrid on one machine: a real control plane from
// controlplane, sitegrid-manager, and simulated edge sites of kwok nodes.
// `sitegridctl lab` is its command line.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
	"github.com/sitegrid/sitegrid/internal/controlplane"
)

// SiteLabel is the node label whose value names a lab node's site.
const SiteLabel = "sitegrid.io/site"

// Files and folders inside a lab's workdir. Down removes exactly these.
const (
	stateFile       = "lab.json"
	logFile         = "lab.log"
	lockFile        = "lab.lock"
	socketFile      = "lab.sock"
	controlPlaneDir = "controlplane"
	binDir          = "bin"
)

// State is what a running lab records for the other lab commands.
type State struct {
	// PID is the process that owns the lab's processes (the foreground
	// `lab up`, or its detached copy).
	PID        int                      `json:"pid"`
	Ready      bool                     `json:"ready"`
	StartedAt  time.Time                `json:"startedAt"`
	Endpoint   string                   `json:"endpoint"`
	Kubeconfig string                   `json:"kubeconfig"`
	Components []controlplane.Component `json:"components"`
	Sites      []Site                   `json:"sites"`
	// Group is the NodeGroup whose units are the sites.
	Group string `json:"group"`
}

// Site is one simulated edge site.
type Site struct {
	Name  string   `json:"name"`
	Nodes []string `json:"nodes"`
}

// DefaultWorkdir is where a lab lives unless --workdir says otherwise.
func DefaultWorkdir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "sitegrid", "lab")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "sitegrid-lab")
	}
	return filepath.Join(home, ".local", "state", "sitegrid", "lab")
}

// ErrNoLab means the workdir holds no lab.
var ErrNoLab = errors.New("no lab")

// ReadState loads the state of the lab in workdir.
func ReadState(workdir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(workdir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: start one with `sitegridctl lab up --workdir %s`", ErrNoLab, workdir, workdir)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): remove the lab with `sitegridctl lab down --workdir %s`", filepath.Join(workdir, stateFile), err, workdir)
	}
	return &s, nil
}

func writeState(workdir string, s *State) error {
	return atomicfile.WriteJSON(filepath.Join(workdir, stateFile), s, 0o600)
}
