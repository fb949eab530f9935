package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Identity: a client never gains access it would not have directly.
//   - A bearer token is passed through unchanged: the apiserver sees the
//     client itself.
//   - A client certificate of the cluster CA ends at the hub's TLS, so the
//     hub forwards with its own credential and impersonates the certificate's
//     user and groups. The hub accepts only the identities it is configured
//     for (this node's kubelet), and RBAC lets its credential impersonate
//     exactly those, nothing else.
//   - A request with neither is refused; so is a certificate client that
//     sends impersonation headers of its own (it would borrow the hub's
//     right to impersonate).

// Identity is a user the hub may impersonate for certificate clients.
type Identity struct {
	User   string
	Groups []string
}

// Caller is who sent a request, as the hub authenticated it.
type Caller struct {
	// Certificate is a client certificate's identity; unset for a token
	// caller.
	Certificate *Identity
	// Self is a certificate of the hub's own credential: its reads go
	// upstream as the hub.
	Self bool
	// authorization is a token caller's Authorization header.
	authorization string
}

// kubeletPrefix starts a kubelet's user name.
const kubeletPrefix = "system:node:"

// Kubelet is the node of a kubelet's certificate, if the caller is one.
func (c Caller) Kubelet() (string, bool) {
	if c.Certificate == nil {
		return "", false
	}
	return strings.CutPrefix(c.Certificate.User, kubeletPrefix)
}

// cacheIdentity names the caller in cache keys: the user and its sorted
// groups (answers obtained with more groups must not serve a certificate
// with fewer), or a hash of a token, which is never stored.
func (c Caller) cacheIdentity() string {
	if c.Certificate == nil {
		sum := sha256.Sum256([]byte(c.authorization))
		return "token:" + hex.EncodeToString(sum[:16])
	}
	id := "user:" + c.Certificate.User
	if groups := slices.Sorted(slices.Values(c.Certificate.Groups)); len(groups) > 0 {
		id += "|" + strings.Join(groups, ",")
	}
	return id
}

// present sets how the caller is presented upstream on out: a token as it
// came, a certificate's identity impersonated by the hub's credential (so
// no Authorization header of the client's goes along).
func (c Caller) present(out http.Header) {
	if c.Certificate == nil {
		return
	}
	out.Del("Authorization")
	if c.Self {
		return
	}
	out.Set("Impersonate-User", c.Certificate.User)
	for _, g := range c.Certificate.Groups {
		out.Add("Impersonate-Group", g)
	}
}

// transport is how the caller's requests reach the cloud.
func (p *Proxy) transport(c Caller) http.RoundTripper {
	if c.Certificate == nil {
		return p.cfg.TokenTransport
	}
	return p.cfg.Transport
}

// refusal is the hub's answer to a caller it does not serve.
type refusal struct {
	code    int
	reason  metav1.StatusReason
	message string
}

// authenticate names the caller of r, or says why the hub refuses it.
func (p *Proxy) authenticate(r *http.Request) (Caller, *refusal) {
	switch {
	case r.TLS != nil && len(r.TLS.VerifiedChains) > 0:
		cert := r.TLS.VerifiedChains[0][0]
		id := &Identity{User: cert.Subject.CommonName, Groups: cert.Subject.Organization}
		if hasImpersonation(r.Header) {
			return Caller{}, &refusal{http.StatusForbidden, metav1.StatusReasonForbidden, "the hub does not forward impersonation requests of certificate clients"}
		}
		self := p.cfg.Self != "" && id.User == p.cfg.Self
		if !self && !p.allowed(*id) {
			return Caller{}, &refusal{http.StatusForbidden, metav1.StatusReasonForbidden, fmt.Sprintf("the hub on this node does not serve user %q", id.User)}
		}
		return Caller{Certificate: id, Self: self}, nil
	case strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		// Passed through: the apiserver authenticates and authorizes the
		// token's owner, and applies its own impersonation rules.
		return Caller{authorization: r.Header.Get("Authorization")}, nil
	}
	return Caller{}, &refusal{http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "present a client certificate of the cluster CA or a bearer token"}
}

func (p *Proxy) allowed(id Identity) bool {
	for _, ok := range p.cfg.Impersonable {
		if ok.User != id.User {
			continue
		}
		for _, g := range id.Groups {
			if !slices.Contains(ok.Groups, g) {
				return false
			}
		}
		return true
	}
	return false
}

// impersonationHeaders are never accepted from certificate clients.
var impersonationHeaders = []string{"Impersonate-User", "Impersonate-Group", "Impersonate-Uid"}

func hasImpersonation(h http.Header) bool {
	for k := range h {
		for _, ih := range impersonationHeaders {
			if strings.EqualFold(k, ih) || strings.HasPrefix(strings.ToLower(k), "impersonate-extra-") {
				return true
			}
		}
	}
	return false
}
