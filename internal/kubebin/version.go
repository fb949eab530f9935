package kubebin

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

// versionPackages are the packages Kubernetes' build stamps with its version
// (hack/lib/version.sh): what servers report at /version and what kubectl
// and client-go report of themselves.
var versionPackages = []string{
	"k8s.io/component-base/version",
	"k8s.io/client-go/pkg/version",
}

// VersionLDFlags returns the -X flags that make a binary built from the
// published k8s.io/kubernetes module at version (a tag such as v1.37.1)
// report that version. The module carries no git metadata, so gitCommit
// stays empty; the tree is the tag's, so gitTreeState is clean.
func VersionLDFlags(version string, built time.Time) (string, error) {
	if !semver.IsValid(version) || semver.Build(version) != "" {
		return "", fmt.Errorf("version %q is not a Kubernetes release tag", version)
	}
	mm := strings.Split(strings.TrimPrefix(semver.MajorMinor(version), "v"), ".")
	if len(mm) != 2 {
		return "", fmt.Errorf("version %q has no major.minor", version)
	}
	vars := []struct{ name, value string }{
		{"gitVersion", version},
		{"gitMajor", mm[0]},
		{"gitMinor", mm[1]},
		{"gitTreeState", "clean"},
		{"buildDate", built.UTC().Format("2006-01-02T15:04:05Z")},
	}
	var flags []string
	for _, pkg := range versionPackages {
		for _, v := range vars {
			flags = append(flags, fmt.Sprintf("-X %s.%s=%s", pkg, v.name, v.value))
		}
	}
	return strings.Join(flags, " "), nil
}
