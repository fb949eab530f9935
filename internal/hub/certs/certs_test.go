package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/util/keyutil"
)

func selfSigned(t *testing.T, cn string, notBefore time.Time, life time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notBefore.Add(life)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM
}

// The store keeps every pair and links the newest, in the layout the
// kubelet's certificate store uses.
func TestStoreUpdate(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir, ClientPair)
	if _, err := s.Current(); err == nil {
		t.Fatal("an empty store has a current pair")
	}
	now := time.Now()
	for _, cn := range []string{"first", "second"} {
		cert, key := selfSigned(t, cn, now, time.Hour)
		if _, err := s.Update(cert, key); err != nil {
			t.Fatal(err)
		}
		got, err := s.Current()
		if err != nil {
			t.Fatal(err)
		}
		if got.Leaf.Subject.CommonName != cn {
			t.Fatalf("current pair is %q, want %q", got.Leaf.Subject.CommonName, cn)
		}
	}
	link, err := os.Readlink(filepath.Join(dir, "hub-client-current.pem"))
	if err != nil || filepath.IsAbs(link) {
		t.Fatalf("hub-client-current.pem links to %q (%v), want a relative name", link, err)
	}
	if pairs, _ := filepath.Glob(filepath.Join(dir, "hub-client-2*.pem")); len(pairs) != 2 {
		t.Fatalf("pairs kept: %v, want both", pairs)
	}
	if _, err := s.Update([]byte("not a certificate"), []byte("nor a key")); err == nil {
		t.Fatal("a broken pair was stored")
	}
	if got, _ := s.Current(); got.Leaf.Subject.CommonName != "second" {
		t.Fatalf("a refused update changed the current pair to %q", got.Leaf.Subject.CommonName)
	}
}

// Renewal is due between 70 and 90 % of the lifetime, from NotBefore (a
// signer's backdating included).
func TestDeadline(t *testing.T) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: start, NotAfter: start.Add(100 * time.Minute)}
	for jitter, want := range map[float64]time.Duration{0: 70 * time.Minute, 0.5: 80 * time.Minute, 1: 90 * time.Minute} {
		if got := deadline(cert, jitter).Sub(start); got != want {
			t.Errorf("jitter %v: renewal after %s, want %s", jitter, got, want)
		}
	}
}
