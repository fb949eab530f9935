package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readTar(t *testing.T, data []byte) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, headers := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, headers
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name], headers[h.Name] = b, h
	}
}

func TestWriteArchive(t *testing.T) {
	img := Image{Ref: "sitegrid.local/tool:v1", Entrypoint: []string{"/bin/tool"}, Env: []string{"A=b"}, ExposedPorts: []string{"8080/tcp"},
		Files: []File{{Path: "bin/tool", Mode: 0o755, Data: []byte("#!tool")}, {Path: "usr/bin/alias", Link: "/bin/tool"}}}
	var a, b bytes.Buffer
	if err := WriteArchive(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("the same image gave two different archives")
	}
	outer, _ := readTar(t, a.Bytes())
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(outer["manifest.json"], &manifest); err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest %+v, want one image of one layer", manifest)
	}
	if diff := cmp.Diff([]string{img.Ref}, manifest[0].RepoTags); diff != "" {
		t.Errorf("RepoTags (-want +got):\n%s", diff)
	}
	var config struct {
		Config struct {
			Entrypoint, Env []string
			ExposedPorts    map[string]struct{}
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(outer[manifest[0].Config], &config); err != nil {
		t.Fatal(err)
	}
	configSum := sha256.Sum256(outer[manifest[0].Config])
	if manifest[0].Config != hex.EncodeToString(configSum[:])+".json" {
		t.Errorf("config %s is not named by its digest", manifest[0].Config)
	}
	layer := outer[manifest[0].Layers[0]]
	layerSum := sha256.Sum256(layer)
	if diff := cmp.Diff([]string{"sha256:" + hex.EncodeToString(layerSum[:])}, config.RootFS.DiffIDs); diff != "" {
		t.Errorf("diff_ids are not the layer's digest (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(img.Entrypoint, config.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if _, ok := config.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ports %v lack 8080/tcp", config.Config.ExposedPorts)
	}
	files, headers := readTar(t, layer)
	if string(files["bin/tool"]) != "#!tool" || headers["bin/tool"].Mode != 0o755 {
		t.Errorf("bin/tool: %q mode %o", files["bin/tool"], headers["bin/tool"].Mode)
	}
	if h := headers["usr/bin/alias"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/bin/tool" {
		t.Errorf("usr/bin/alias is not a link to /bin/tool: %+v", h)
	}
	for _, d := range []string{"bin/", "usr/", "usr/bin/"} {
		if h := headers[d]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("layer lacks folder %s", d)
		}
	}
}

func TestWriteArchiveRefusesBadImages(t *testing.T) {
	good := Image{Ref: "x/y:v1", Entrypoint: []string{"/y"}, Files: []File{{Path: "y", Mode: 0o755}}}
	cases := map[string]func(*Image){
		"no tag":          func(i *Image) { i.Ref = "x/y" },
		"no entrypoint":   func(i *Image) { i.Entrypoint = nil },
		"absolute path":   func(i *Image) { i.Files[0].Path = "/y" },
		"escaping path":   func(i *Image) { i.Files[0].Path = "../y" },
		"unclean path":    func(i *Image) { i.Files[0].Path = "a//y" },
		"same file twice": func(i *Image) { i.Files = append(i.Files, i.Files[0]) },
		"link with data":  func(i *Image) { i.Files[0].Link, i.Files[0].Data = "/z", []byte("z") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			img := good
			img.Files = append([]File(nil), good.Files...)
			mutate(&img)
			var buf bytes.Buffer
			err := WriteArchive(&buf, img)
			if err == nil {
				t.Fatalf("WriteArchive accepted %+v", img)
			}
			if !strings.Contains(err.Error(), img.Ref) {
				t.Errorf("error %q does not name the image", err)
			}
		})
	}
	if err := WriteArchive(io.Discard, good); err != nil {
		t.Errorf("the good image was refused: %v", err)
	}
}
