package nano

import (
	"crypto/tls"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/domWinter/go-nano/internal/certs"
)

// How servers, services and clients use the TLS configurations of their
// options: to serve HTTPS, and to call servers and instances over HTTPS.

// serverTLS returns the configuration a server or service serves HTTPS
// with: c, speaking HTTP/1.1 only (the protocol the package's transports
// and its tests cover). Nil for nil.
func serverTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	c = c.Clone()
	c.NextProtos = []string{"http/1.1"}
	if c.GetConfigForClient != nil {
		get := c.GetConfigForClient
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hello)
			if cc != nil && !slices.Equal(cc.NextProtos, c.NextProtos) {
				cc = cc.Clone()
				cc.NextProtos = c.NextProtos
			}
			return cc, err
		}
	}
	return c
}

// clientTLS returns the TLS configuration of the transports' connections
// to host: base (an empty configuration when nil: the system's roots, no
// certificate) cloned for each new connection, with ServerName the host
// dialled when base names none, so that the peer's certificate is checked
// for the host of the address it registered or was given. A
// VerifyConnection of base sees that host in ConnectionState.ServerName,
// an IP address included (crypto/tls leaves it empty for IP addresses).
// The connections share one session cache, so that a new connection to a
// host already met resumes its session rather than make a full handshake.
func clientTLS(base *tls.Config) func(host string) *tls.Config {
	if base == nil {
		base = &tls.Config{}
	}
	base = base.Clone()
	if base.ClientSessionCache == nil {
		base.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return func(host string) *tls.Config {
		c := base.Clone()
		if c.ServerName == "" {
			c.ServerName = host
		}
		if verify := c.VerifyConnection; verify != nil {
			name := c.ServerName
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if cs.ServerName == "" {
					cs.ServerName = name
				}
				return verify(cs)
			}
		}
		return c
	}
}

// TLSFiles is a certificate, its key and a bundle of certificate
// authorities read from PEM files, such as those a Kubernetes Secret of
// cert-manager mounts (tls.crt, tls.key, ca.crt), and read again when they
// change, so that a rotated certificate or bundle is taken without a
// restart. The files are looked at again at most once a second, when a
// handshake needs them; a change that does not load (a key written before
// its certificate, say) keeps the last good files until it does, and Err
// tells of it. It is what nano-server and the constructors NewServer and
// NewService build their TLS configurations with. A TLSFiles is safe for
// concurrent use.
type TLSFiles struct {
	files *certs.Files
}

// LoadTLSFiles reads a certificate and its key (both or neither) and a CA
// bundle (empty means the system's roots), failing with
// ErrInvalidOptions if they do not load.
func LoadTLSFiles(certFile, keyFile, caFile string) (*TLSFiles, error) {
	f, err := certs.Load(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOptions, err)
	}
	return &TLSFiles{files: f}, nil
}

// ServerConfig returns a configuration to serve with (ServerOptions.TLS,
// ServiceOptions.TLS): it presents the certificate and, when
// requireClientCerts is true, requires from every client a certificate
// signed by the CA bundle (mutual TLS; without a bundle, the system's
// roots would be asked, which is rarely what a fleet wants). Both follow
// the files.
func (t *TLSFiles) ServerConfig(requireClientCerts bool) *tls.Config {
	return t.files.ServerConfig(requireClientCerts)
}

// ClientConfig returns a configuration to call with
// (ServerOptions.UpstreamTLS, ServiceOptions.ClientTLS, ClientOptions.TLS):
// it checks the peer's certificate against the CA bundle for the host
// dialled, and presents the certificate, if any, to peers that require
// one. Both follow the files. It is meant for this package's transports,
// which tell it the host dialled.
func (t *TLSFiles) ClientConfig() *tls.Config { return t.files.ClientConfig() }

// Err returns why the files last failed to load again, nil if they
// loaded.
func (t *TLSFiles) Err() error { return t.files.Err() }

// Check looks at the files as a handshake would (reading them again if
// they changed, at most once a second) and returns why they fail to load,
// nil if they load: for a program that reports a broken rotation while no
// handshake happens. The last good files stay in use either way.
func (t *TLSFiles) Check() error { return t.files.Check() }

// tlsFromEnv returns the TLS configurations the environment gives the
// compatible constructors: NANO_TLS_CERT and NANO_TLS_KEY, the
// certificate to present, NANO_TLS_CA, the bundle that signs the peers'
// certificates, and NANO_TLS_CLIENT_CERTS=true, to require certificates
// from clients. serve is nil without a certificate, call is nil without
// a bundle: with NANO_TLS_CA, servers and services call with the files
// (services then reach their servers over HTTPS).
func tlsFromEnv() (serve, call *tls.Config, err error) {
	cert, key, ca := os.Getenv("NANO_TLS_CERT"), os.Getenv("NANO_TLS_KEY"), os.Getenv("NANO_TLS_CA")
	require, err := envBool("NANO_TLS_CLIENT_CERTS")
	if err != nil {
		return nil, nil, err
	}
	if cert == "" && key == "" && ca == "" {
		if require {
			return nil, nil, fmt.Errorf("%w: NANO_TLS_CLIENT_CERTS needs NANO_TLS_CERT, NANO_TLS_KEY and NANO_TLS_CA", ErrInvalidOptions)
		}
		return nil, nil, nil
	}
	files, err := LoadTLSFiles(cert, key, ca)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (NANO_TLS_CERT, NANO_TLS_KEY, NANO_TLS_CA)", err)
	}
	if require && ca == "" {
		return nil, nil, fmt.Errorf("%w: NANO_TLS_CLIENT_CERTS needs NANO_TLS_CA, the bundle to check client certificates against", ErrInvalidOptions)
	}
	if cert != "" {
		serve = files.ServerConfig(require)
	}
	if ca != "" {
		call = files.ClientConfig()
	}
	return serve, call, nil
}

// envBool reads a boolean environment variable: empty is false.
func envBool(name string) (bool, error) {
	v := os.Getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q is not a boolean", ErrInvalidOptions, name, v)
	}
	return b, nil
}
