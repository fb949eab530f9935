package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sitegrid/sitegrid/internal/atomicfile"
)

// Store keeps one pair in a directory the way the kubelet keeps its own
// (client-go's certificate file store): every certificate and its key in
// one file, <pair>-<time>.pem, and <pair>-current.pem linking to the
// newest, so a renewal is one rename and a crash leaves the old pair.
type Store struct{ dir, pair string }

// NewStore is the store of pair in dir.
func NewStore(dir, pair string) Store { return Store{dir: dir, pair: pair} }

// CurrentPath is the link to the newest pair.
func (s Store) CurrentPath() string { return filepath.Join(s.dir, s.pair+"-current.pem") }

// Current reads the newest pair.
func (s Store) Current() (*tls.Certificate, error) {
	data, err := os.ReadFile(s.CurrentPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s", filepath.Base(s.CurrentPath()), s.dir)
	}
	if err != nil {
		return nil, err
	}
	return parsePair(data, data)
}

// Update stores a new pair and makes it the current one.
func (s Store) Update(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := parsePair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	name := s.pair + "-" + time.Now().UTC().Format("2006-01-02-15-04-05.000000000") + ".pem"
	if err := atomicfile.Write(filepath.Join(s.dir, name), append(append([]byte{}, certPEM...), keyPEM...), 0o600); err != nil {
		return nil, err
	}
	link := s.CurrentPath() + ".new"
	_ = os.Remove(link)
	if err := os.Symlink(name, link); err != nil {
		return nil, err
	}
	if err := os.Rename(link, s.CurrentPath()); err != nil {
		return nil, err
	}
	return cert, nil
}

func parsePair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return nil, err
	}
	return &cert, nil
}
