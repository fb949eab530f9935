package proxy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sitegrid/sitegrid/internal/hub/apirequest"
	"github.com/sitegrid/sitegrid/internal/hub/cache"
)

// A kubelet asks the apiserver for every projected service-account token
// of its pods (TokenRequest, a create of serviceaccounts/NAME/token bound to
// the pod). After a reboot without the cloud it asks again, and a pod with
// the default token volume does not start until it gets one. So the hub
// keeps each token the apiserver issued to the kubelet, under the exact
// request (service account, bound pod with its UID, audiences, lifetime),
// and offline answers the same request with that token while the token
// itself says it is valid (its exp claim). It never makes a token up, and a
// token expired, or for a pod, audience or lifetime not seen, is refused.

// tokenKey is the cache key of a kubelet's token request, or false when the
// request is not one the hub can keep (no bound object, or a body it cannot
// read: it goes up as it came).
func tokenKey(caller Caller, info *apirequest.Info, body []byte, contentType string) (cache.Key, bool) {
	tr, err := decodeTokenRequest(body, contentType)
	if err != nil || tr.Spec.BoundObjectRef == nil || tr.Spec.BoundObjectRef.UID == "" {
		return cache.Key{}, false
	}
	ref := tr.Spec.BoundObjectRef
	audiences := slices.Clone(tr.Spec.Audiences)
	slices.Sort(audiences)
	exp := ""
	if tr.Spec.ExpirationSeconds != nil {
		exp = strconv.FormatInt(*tr.Spec.ExpirationSeconds, 10)
	}
	spec := strings.Join([]string{
		"bound=" + ref.APIVersion + "/" + ref.Kind + "/" + ref.Name + "/" + string(ref.UID),
		"audiences=" + strings.Join(audiences, ","),
		"expirationSeconds=" + exp,
	}, ";")
	return cache.Key{Identity: caller.cacheIdentity(), Verb: cache.VerbToken, Version: "v1", Resource: "serviceaccounts",
		Subresource: "token", Namespace: info.Namespace, Name: info.Name, FieldSelector: spec}, true
}

func decodeTokenRequest(body []byte, contentType string) (*authenticationv1.TokenRequest, error) {
	if strings.HasPrefix(contentType, "application/json") {
		tr := &authenticationv1.TokenRequest{}
		return tr, json.Unmarshal(body, tr)
	}
	obj, _, err := offlineCodecs().UniversalDeserializer().Decode(body, nil, &authenticationv1.TokenRequest{})
	if err != nil {
		return nil, err
	}
	tr, ok := obj.(*authenticationv1.TokenRequest)
	if !ok {
		return nil, fmt.Errorf("body is a %T, not a TokenRequest", obj)
	}
	return tr, nil
}

// keepToken stores the apiserver's answer to a kubelet's token request.
func (p *Proxy) keepToken(k cache.Key, body []byte) error {
	var tr authenticationv1.TokenRequest
	if err := json.Unmarshal(body, &tr); err != nil {
		return err
	}
	if _, err := tokenExpiry(tr.Status.Token); err != nil {
		return err
	}
	return p.cfg.Cache.PutObject(k, "", body)
}

// serveToken answers a kubelet's token request offline with the token the
// apiserver issued for the same request, while it is valid.
func (p *Proxy) serveToken(w http.ResponseWriter, req *request) (Served, bool) {
	_, body, err := p.cfg.Cache.Object(req.key)
	if err != nil {
		return 0, false
	}
	var tr authenticationv1.TokenRequest
	if err := json.Unmarshal(body, &tr); err != nil {
		return 0, false
	}
	exp, err := tokenExpiry(tr.Status.Token)
	if err != nil {
		return 0, false
	}
	if now := p.now(); !now.Before(exp) {
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, fmt.Sprintf(
			"the cloud apiserver is unreachable from this node, and the last token it issued for %s/%s to this pod expired at %s; a new one needs the cloud",
			req.key.Namespace, req.key.Name, exp.UTC().Format(time.RFC3339)))
		return ServedRefused, true
	}
	writeObjectCode(w, req.in, http.StatusCreated, &tr, body)
	return ServedCache, true
}

// tokenExpiry reads the exp claim of a JWT: when the apiserver stops
// accepting it. For a pod's default token volume that is a year after it was
// issued (the apiserver extends the kubelet's 3607 s request, and only warns
// after the hour), for other tokens the lifetime asked for. The signature is
// the apiserver's to check; the hub only decides whether to hand it out.
func tokenExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("token payload: %w", err)
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("token claims: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, fmt.Errorf("token has no exp claim")
	}
	return time.Unix(*claims.Exp, 0), nil
}
