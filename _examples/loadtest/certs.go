package main

import (
	"crypto/tls"
	"os"
	"path/filepath"

	"github.com/domWinter/go-nano/internal/testca"
)

// makeCerts makes a certificate authority and one certificate it signs,
// for 127.0.0.1 and localhost and good for servers and clients, and writes
// them to dir as ca.crt, tls.crt and tls.key (for a proxy measured beside
// the loadtest). It returns the configuration to serve with and the one
// to call with, which trusts the authority.
func makeCerts(dir string) (serving, calling *tls.Config, err error) {
	ca, err := testca.New("loadtest CA")
	if err != nil {
		return nil, nil, err
	}
	leaf, err := ca.Issue("")
	if err != nil {
		return nil, nil, err
	}
	for name, data := range map[string][]byte{"ca.crt": ca.PEM, "tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, nil, err
		}
	}
	return &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}, &tls.Config{RootCAs: ca.Pool}, nil
}
