// Package config holds sitegrid's generated CRDs and RBAC, embedded so that
// `sitegridctl lab` installs exactly what `kubectl apply -k config/default`
// would, without a checkout.
package config

import "embed"

// Manifests holds admission/, crd/ and rbac/. Kustomization files are among them; skip
// them when applying.
//
//go:embed admission crd rbac manager/namespace.yaml
var Manifests embed.FS
