package proxy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/sitegrid/sitegrid/internal/testenv"
)

// TestKubeletTokensOffline: a kubelet restarted without the cloud asks
// again for its pods' service-account tokens. The hub answers the same
// request (pod, UID, audiences, lifetime) with the token the apiserver
// issued, while that token is valid, and refuses anything else.
func TestKubeletTokensOffline(t *testing.T) {
	f := startHub(t, openStore(t))
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "default"}}
	if _, err := f.admin.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	f.newPod("app")
	pod, err := f.admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet sends protobuf, as it does by default.
	kubelet := f.certClient("system:node:"+node, []string{"system:nodes"}, func(c *rest.Config) {
		c.ContentType = "application/vnd.kubernetes.protobuf"
	})
	request := func(audiences []string) *authenticationv1.TokenRequest {
		return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: audiences, ExpirationSeconds: ptr.To[int64](3607),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}
	}
	issue := func(tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return kubelet.CoreV1().ServiceAccounts("default").CreateToken(ctx, "default", tr, metav1.CreateOptions{})
	}
	online, err := issue(request(nil))
	if err != nil {
		t.Fatal(err)
	}

	f.uplink.Cut()
	f.waitOffline()
	offline, err := issue(request(nil))
	if err != nil {
		t.Fatalf("the same token request offline: %v", err)
	}
	if offline.Status.Token != online.Status.Token || !offline.Status.ExpirationTimestamp.Equal(&online.Status.ExpirationTimestamp) {
		t.Errorf("offline the hub answered another token than the apiserver issued")
	}
	other := request([]string{"vault"})
	if _, err := issue(other); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("a token for an audience never issued, offline: %v, want ServiceUnavailable", err)
	}
	recreated := request(nil)
	recreated.Spec.BoundObjectRef.UID = "00000000-0000-0000-0000-000000000001"
	if _, err := issue(recreated); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("a token for another pod of the same name, offline: %v, want ServiceUnavailable", err)
	}
	// Past the token's own expiry (a year for a pod's default token: the
	// apiserver extends the 3607 s asked for) the hub hands it out no more.
	f.clock.advance(366 * 24 * time.Hour)
	if _, err := issue(request(nil)); !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token offline: %v, want ServiceUnavailable saying it expired", err)
	}

	f.clock.advance(-366 * 24 * time.Hour)
	f.uplink.Heal()
	testenv.Eventually(t, 15*time.Second, func(ctx context.Context) error {
		again, err := issue(request(nil))
		if err != nil {
			return err
		}
		if again.Status.Token == online.Status.Token {
			return errors.New("the hub still answers the kept token with the cloud back")
		}
		return nil
	})
}
