// Package cache is the edge hub's persistent cache: responses of the cloud
// apiserver stored in a crash-safe bbolt file, keyed so that different
// identities, resources, namespaces, names and selectors never collide, and
// lists updated by watch events in time proportional to the event.
package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sitegrid/sitegrid/internal/hub/apirequest"
)

// Verbs a Key can have. A watch is answered from, and updates, the list of
// the same selectors, so it has the list's key.
const (
	VerbGet  = "get"
	VerbList = "list"
	// VerbDiscovery is a read of an API discovery document (/api, /apis,
	// /apis/<group>[/<version>], /version); Resource holds its path. Clients
	// such as kubectl cannot find any resource offline without them.
	VerbDiscovery = "discovery"
	// VerbTable is a read asking for a server-side printed Table (kubectl
	// get): the answer is kept whole and served offline as it was last
	// seen; watch events do not update it.
	VerbTable = "table"
	// VerbToken is a service-account token the apiserver issued to a
	// kubelet (a create of serviceaccounts/token): Name is the service
	// account, FieldSelector the request's spec in canonical form (bound
	// object, audiences, lifetime), so only the same request for the same
	// pod is ever answered with it.
	VerbToken = "token"
	// VerbPodStatus is a pod status a kubelet wrote while the cloud was
	// gone, kept until it reached the cloud: Namespace and Name are the
	// pod's.
	VerbPodStatus = "podstatus"
)

// Key identifies one cached response.
type Key struct {
	// Identity is who asked: responses depend on the caller's permissions,
	// so two callers never share an entry.
	Identity    string
	Verb        string
	Group       string
	Version     string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
	// LabelSelector and FieldSelector are in canonical form, so equivalent
	// selectors written differently share an entry.
	LabelSelector string
	FieldSelector string
	// Encoding is how the answer is encoded: EncodingJSON (empty) or
	// EncodingProtobuf. The apiserver answers a client in the encoding it
	// prefers, and protobuf cannot be turned into JSON without the types,
	// so each encoding of a read has an entry of its own.
	Encoding string
}

// Encodings of a cached answer.
const (
	EncodingJSON     = ""
	EncodingProtobuf = "protobuf"
)

// As is k for an answer in encoding.
func (k Key) As(encoding string) Key {
	k.Encoding = encoding
	return k
}

// ErrNotCacheable means the request is not a read of a resource.
var ErrNotCacheable = errors.New("not a cacheable request")

// KeyForRequest parses a Kubernetes API request into its cache key. Reads of
// resources (get, list, watch) are cacheable; anything else returns
// ErrNotCacheable. Malformed selectors are an error, as the apiserver would
// refuse them too.
func KeyForRequest(identity string, req *http.Request) (Key, error) {
	info, err := apirequest.Parse(req)
	if err != nil {
		return Key{}, err
	}
	return KeyFor(identity, info)
}

// KeyFor is KeyForRequest for a request parsed already.
func KeyFor(identity string, info *apirequest.Info) (Key, error) {
	if !info.IsResourceRequest {
		if info.Verb == "get" && isDiscovery(info.Path) {
			return Key{Identity: identity, Verb: VerbDiscovery, Resource: info.Path}, nil
		}
		return Key{}, ErrNotCacheable
	}
	// Streams (log, exec, attach, portforward, proxy) pass through: only
	// objects and their status are cached.
	if info.Subresource != "" && info.Subresource != "status" {
		return Key{}, ErrNotCacheable
	}
	verb := info.Verb
	switch verb {
	case "get":
		verb = VerbGet
	case "list", "watch":
		verb = VerbList
	default:
		return Key{}, ErrNotCacheable
	}
	k := Key{
		Identity: identity, Verb: verb,
		Group: info.APIGroup, Version: info.APIVersion, Resource: info.Resource, Subresource: info.Subresource,
		Namespace: info.Namespace, Name: info.Name,
	}
	if info.LabelSelector != "" {
		sel, err := labels.Parse(info.LabelSelector)
		if err != nil {
			return Key{}, fmt.Errorf("label selector: %w", err)
		}
		k.LabelSelector = sel.String()
	}
	if info.FieldSelector != "" {
		sel, err := fields.ParseSelector(info.FieldSelector)
		if err != nil {
			return Key{}, fmt.Errorf("field selector: %w", err)
		}
		k.FieldSelector = sel.String()
	}
	return k, nil
}

// isDiscovery reports whether path is a discovery document: /version, /api,
// /api/v1, /apis, /apis/<group> or /apis/<group>/<version>.
func isDiscovery(path string) bool {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch parts[0] {
	case "version":
		return len(parts) == 1
	case "api":
		return len(parts) <= 2
	case "apis":
		return len(parts) <= 3
	}
	return false
}

func (k Key) fields() []string {
	return []string{k.Identity, k.Verb, k.Group, k.Version, k.Resource, k.Subresource, k.Namespace, k.Name, k.LabelSelector, k.FieldSelector, k.Encoding}
}

// Bytes encodes the key: each field length-prefixed, so no two keys share an
// encoding whatever their fields contain.
func (k Key) Bytes() []byte {
	var out []byte
	for _, f := range k.fields() {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	return out
}

// ParseKey decodes Bytes.
func ParseKey(b []byte) (Key, error) {
	var parts [11]string
	for i := range parts {
		n, size := binary.Uvarint(b)
		if size <= 0 || uint64(len(b)-size) < n {
			return Key{}, fmt.Errorf("cache key: field %d truncated", i)
		}
		parts[i] = string(b[size : size+int(n)])
		b = b[size+int(n):]
	}
	if len(b) != 0 {
		return Key{}, errors.New("cache key: trailing bytes")
	}
	return Key{Identity: parts[0], Verb: parts[1], Group: parts[2], Version: parts[3], Resource: parts[4], Subresource: parts[5],
		Namespace: parts[6], Name: parts[7], LabelSelector: parts[8], FieldSelector: parts[9], Encoding: parts[10]}, nil
}

func (k Key) String() string {
	s := fmt.Sprintf("%s %s %s/%s/%s/%s ns=%q name=%q labels=%q fields=%q", k.Identity, k.Verb, k.Group, k.Version, k.Resource, k.Subresource, k.Namespace, k.Name, k.LabelSelector, k.FieldSelector)
	if k.Encoding != EncodingJSON {
		s += " " + k.Encoding
	}
	return s
}
