package tunnel

import (
	"crypto/tls"
	"os"
	"sync"
	"time"
)

// KeyPairFile serves a certificate and key from files, read again when
// either changes (checked at most every few seconds), so a rotated
// certificate (cert-manager, kubeadm renew) is used without a restart.
type KeyPairFile struct {
	CertFile, KeyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	mtime   time.Time
	checked time.Time
}

// Load reads the pair now, so a bad one is an error at start.
func (k *KeyPairFile) Load() error {
	_, err := k.get()
	return err
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPairFile) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.get() }

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (k *KeyPairFile) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.get()
}

func (k *KeyPairFile) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && time.Since(k.checked) < 5*time.Second {
		return k.cert, nil
	}
	k.checked = time.Now()
	mtime := latestMtime(k.CertFile, k.KeyFile)
	if k.cert != nil && !mtime.After(k.mtime) {
		return k.cert, nil
	}
	c, err := tls.LoadX509KeyPair(k.CertFile, k.KeyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil // half-written rotation: keep the old pair
		}
		return nil, err
	}
	k.cert, k.mtime = &c, mtime
	return k.cert, nil
}

func latestMtime(files ...string) time.Time {
	var t time.Time
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}
