// Package images makes the lab's container images without a registry or a
// container engine: docker-archive tarballs (what `docker save` writes and
// `ctr images import` reads) of one layer each, built from this
// repository's Go programs and from the machine's busybox.
package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// File is one entry of an image's only layer.
type File struct {
	// Path inside the image, without a leading slash.
	Path string
	Mode int64
	Data []byte
	// Link, when set, makes the entry a symbolic link to Link.
	Link string
}

// Image is what an archive holds.
type Image struct {
	// Ref is the name the image is imported as: registry/name:tag.
	Ref          string
	Entrypoint   []string
	Env          []string
	ExposedPorts []string // "8080/tcp"
	Files        []File
}

// The archive's entries carry one fixed time, so the same image gives the
// same bytes (and digest) on every build.
var epoch = time.Unix(0, 0).UTC()

// Validate says what is wrong with an image, or nil.
func (img Image) Validate() error {
	name, tag, ok := strings.Cut(img.Ref, ":")
	if !ok || name == "" || tag == "" || strings.Contains(tag, "/") {
		return fmt.Errorf("image reference %q is not name:tag", img.Ref)
	}
	if len(img.Entrypoint) == 0 {
		return fmt.Errorf("image %s has no entrypoint", img.Ref)
	}
	seen := map[string]bool{}
	for _, f := range img.Files {
		clean := path.Clean(f.Path)
		if f.Path == "" || strings.HasPrefix(f.Path, "/") || clean != f.Path || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("image %s: file path %q must be relative and clean", img.Ref, f.Path)
		}
		if f.Link != "" && len(f.Data) > 0 {
			return fmt.Errorf("image %s: file %s is a link and has data", img.Ref, f.Path)
		}
		if seen[clean] {
			return fmt.Errorf("image %s: file %s twice", img.Ref, clean)
		}
		seen[clean] = true
	}
	return nil
}

// WriteArchive writes img as a docker-archive tarball.
func WriteArchive(w io.Writer, img Image) error {
	if err := img.Validate(); err != nil {
		return err
	}
	layer, err := layerTar(img.Files)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(layerSum[:])
	ports := map[string]struct{}{}
	for _, p := range img.ExposedPorts {
		ports[p] = struct{}{}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": img.Env, "ExposedPorts": ports},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(layerSum[:]) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{img.Ref}, "Layers": []string{layerName}}})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer}, {"manifest.json", manifest}} {
		if err := writeEntry(tw, &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data))}, e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layerTar is the layer: the files, with every parent folder, in order.
func layerTar(files []File) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range names {
		if err := writeEntry(tw, &tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil); err != nil {
			return nil, err
		}
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		h := &tar.Header{Name: f.Path, Mode: f.Mode, Size: int64(len(f.Data))}
		if f.Link != "" {
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		}
		if err := writeEntry(tw, h, f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, h *tar.Header, data []byte) error {
	h.ModTime, h.Format = epoch, tar.FormatPAX
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
