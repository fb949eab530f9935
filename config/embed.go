// Package config holds sitegrid's generated CRDs and RBAC, embedded so that
// `sitegridctl lab` installs the CRDs and RBAC `kubectl apply -k
// config/default` would, without a checkout. (The lab runs the manager as a
// process and registers its webhooks by URL instead of config/default's
// Service and cert-manager certificate.)
package config

import "embed"

// Manifests holds admission/, crd/ and rbac/. Kustomization files are among them; skip
// them when applying.
//
//go:embed admission crd rbac manager/namespace.yaml
var Manifests embed.FS

// HubUnit is the systemd unit `sitegrid-hub join --init systemd` installs.
//
//go:embed hub/sitegrid-hub.service
var HubUnit []byte
