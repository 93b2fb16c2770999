// Package certs reads a certificate, its key and a bundle of certificate
// authorities from PEM files, and reads them again when the files change,
// so that servers and clients take rotated certificates without a restart.
// It serves the TLS settings given as file paths; a program with a
// tls.Config of its own does not need it.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files is a certificate and key, and a CA bundle, read from files. The
// files are looked at again at most once per CheckEvery, when a handshake
// needs them; a change that does not load (a key written before its
// certificate, say) keeps the last good ones until it does. A Files is
// safe for concurrent use.
type Files struct {
	CertFile, KeyFile string // the certificate chain and its key; both or neither
	CAFile            string // the authorities that sign peers' certificates; empty means the system's
	CheckEvery        time.Duration

	mu      sync.Mutex
	checked time.Time
	stamps  [3]stamp
	cert    *tls.Certificate
	pool    *x509.CertPool
	err     error // of the last reading, nil if it loaded
}

// stamp is what tells a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

// DefaultCheckEvery is CheckEvery when it is zero.
const DefaultCheckEvery = time.Second

// Load reads the files once, failing if they do not load.
func Load(certFile, keyFile, caFile string) (*Files, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("certs: give both a certificate and its key, or neither")
	}
	f := &Files{CertFile: certFile, KeyFile: keyFile, CAFile: caFile}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reload(time.Now()); err != nil {
		return nil, err
	}
	return f, nil
}

// current returns the certificate and pool, reading the files again if
// they changed since they were last looked at.
func (f *Files) current() (*tls.Certificate, *x509.CertPool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	every := f.CheckEvery
	if every <= 0 {
		every = DefaultCheckEvery
	}
	if now := time.Now(); now.Sub(f.checked) >= every {
		f.reload(now) // an error keeps the last good files; Err tells of it
	}
	return f.cert, f.pool
}

// Check reads the files again if they changed and the last look is
// CheckEvery old, as a handshake would, and returns why they failed to
// load, nil if they loaded: for a watcher that reports a broken rotation
// while no handshake happens.
func (f *Files) Check() error {
	f.current()
	return f.Err()
}

// Err returns why the files last failed to load, nil if they loaded.
func (f *Files) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// reload reads the files if their stamps changed. The caller holds f.mu.
func (f *Files) reload(now time.Time) error {
	f.checked = now
	var stamps [3]stamp
	for i, name := range []string{f.CertFile, f.KeyFile, f.CAFile} {
		if name == "" {
			continue
		}
		st, err := os.Stat(name)
		if err != nil {
			f.err = fmt.Errorf("certs: %v", err)
			return f.err
		}
		stamps[i] = stamp{st.ModTime(), st.Size()}
	}
	if stamps == f.stamps && f.err == nil && (f.cert != nil || f.CertFile == "") {
		return nil
	}
	var cert *tls.Certificate
	if f.CertFile != "" {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			f.err = fmt.Errorf("certs: %s and %s: %v", f.CertFile, f.KeyFile, err)
			return f.err
		}
		cert = &c
	}
	var pool *x509.CertPool
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			f.err = fmt.Errorf("certs: %v", err)
			return f.err
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			f.err = fmt.Errorf("certs: %s holds no PEM certificate", f.CAFile)
			return f.err
		}
	}
	f.cert, f.pool, f.stamps, f.err = cert, pool, stamps, nil
	return nil
}

// ServerConfig returns a tls.Config for a server that presents the
// certificate and, when requireClients is true, requires from each client
// a certificate signed by the CA bundle. Both follow the files.
func (f *Files) ServerConfig(requireClients bool) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if requireClients {
		// What the configurations made for each client do, said where
		// the program that holds this one can see it.
		base.ClientAuth = tls.RequireAndVerifyClientCert
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := f.current()
		if cert == nil {
			return nil, errors.New("certs: no certificate to present")
		}
		c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
		if requireClients {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = pool
		}
		return c, nil
	}
	return base
}

// ClientConfig returns a tls.Config for a client: it checks the server's
// certificate against the CA bundle (the system's when there is none) for
// the name in ConnectionState.ServerName, and presents the certificate,
// if any, to servers that ask for one. Both follow the files: the check
// is made in VerifyConnection, against the bundle of the moment, with the
// standard library's verification. Set ServerName to the host dialled;
// crypto/tls leaves ConnectionState.ServerName empty for an IP address, so
// a dialler of IP addresses fills it in before calling VerifyConnection
// (nano's transports do), else the check fails.
func (f *Files) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The bundle may change after the Config was made, so Go's own
		// check, fixed to RootCAs, is replaced by the same check made in
		// VerifyConnection against the current bundle.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("certs: the server presented no certificate")
			}
			if cs.ServerName == "" {
				return errors.New("certs: no server name to check the certificate for")
			}
			_, pool := f.current()
			opts := x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := f.current()
			if cert == nil {
				return &tls.Certificate{}, nil // none: the server decides
			}
			return cert, nil
		},
	}
}
