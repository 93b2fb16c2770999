package certs

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domWinter/go-nano/internal/testca"
)

// newAuthority makes a CA for a test.
func newAuthority(t *testing.T, name string) *testca.CA {
	t.Helper()
	ca, err := testca.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue returns a certificate of ca for 127.0.0.1, and its key, in PEM.
func issue(t *testing.T, ca *testca.CA) (certPEM, keyPEM []byte, serialNumber int64) {
	t.Helper()
	l, err := ca.Issue("")
	if err != nil {
		t.Fatal(err)
	}
	return l.CertPEM, l.KeyPEM, l.Serial
}

// writes counts the files write wrote.
var writes int64

// write writes data to the file, with a modification time that differs
// from the last one even on coarse clocks.
func write(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	writes++
	later := time.Now().Add(time.Duration(writes) * time.Second)
	os.Chtimes(name, later, later)
}

// TestFiles: a TLS server and client configured from files handshake,
// refuse what they must, and take rotated files without a restart.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	ca := newAuthority(t, "ca")
	cert, key, first := issue(t, ca)
	write(t, path("server.crt"), cert)
	write(t, path("server.key"), key)
	write(t, path("ca.crt"), ca.PEM)
	clientCert, clientKey, _ := issue(t, ca)
	write(t, path("client.crt"), clientCert)
	write(t, path("client.key"), clientKey)

	server, err := Load(path("server.crt"), path("server.key"), path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	server.CheckEvery = time.Nanosecond
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	ts.TLS = server.ServerConfig(true)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	ts.StartTLS()
	defer ts.Close()

	get := func(f *Files) (int64, error) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{
			DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, _ := net.SplitHostPort(addr)
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := tls.Client(conn, forHost(f.ClientConfig(), host))
				if err := tc.HandshakeContext(ctx); err != nil {
					conn.Close()
					return nil, err
				}
				return tc, nil
			},
		}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(ts.URL)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}

	client, err := Load(path("client.crt"), path("client.key"), path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	client.CheckEvery = time.Nanosecond
	if got, err := get(client); err != nil || got != first {
		t.Fatalf("handshake: serial %d, %v; want %d", got, err, first)
	}

	// The certificate is checked for the host dialled: one for another
	// name is refused.
	if conn, err := tls.Dial("tcp", ts.Listener.Addr().String(), forHost(client.ClientConfig(), "nano.example")); err == nil {
		conn.Close()
		t.Error("a certificate for 127.0.0.1 was accepted for nano.example")
	}

	// Without a client certificate, the server refuses.
	anonymous, err := Load("", "", path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(anonymous); err == nil {
		t.Error("a client without a certificate got in")
	}

	// A client that trusts another authority refuses the server.
	other := newAuthority(t, "other")
	write(t, path("other.crt"), other.PEM)
	stranger, err := Load(path("client.crt"), path("client.key"), path("other.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(stranger); err == nil {
		t.Error("a client trusting another authority accepted the server")
	}

	// Rotation: a new certificate is presented once its files are written.
	cert2, key2, second := issue(t, ca)
	write(t, path("server.crt"), cert2)
	write(t, path("server.key"), key2)
	if got, err := get(client); err != nil || got != second {
		t.Fatalf("after rotation: serial %d, %v; want the new %d", got, err, second)
	}

	// A half-written rotation keeps the last good certificate.
	write(t, path("server.key"), []byte("not a key"))
	if got, err := get(client); err != nil || got != second {
		t.Fatalf("after a broken key: serial %d, %v; want the last good %d", got, err, second)
	}
	if server.Err() == nil {
		t.Error("Err() = nil after a key that does not load")
	}
	write(t, path("server.key"), key2)
	if _, err := get(client); err != nil || server.Err() != nil {
		t.Fatalf("after the key is back: %v, Err() = %v", err, server.Err())
	}

	// The client's bundle follows its file too: trusting only the other
	// authority, it refuses the server it accepted.
	write(t, path("ca.crt"), other.PEM)
	if _, err := get(client); err == nil {
		t.Error("the client kept trusting an authority removed from its bundle")
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "a.crt"), "", ""); err == nil {
		t.Error("a certificate without its key was taken")
	}
	if _, err := Load(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), ""); err == nil {
		t.Error("missing files were taken")
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("nothing"), 0o600)
	if _, err := Load("", "", bad); err == nil {
		t.Error("a CA file without certificates was taken")
	}
	// A server config with no certificate refuses handshakes rather than
	// presenting none.
	none, err := Load("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	ts.TLS = none.ServerConfig(false)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if _, err := c.Get(ts.URL); err == nil {
		t.Error("a server with no certificate completed a handshake")
	}
}

// forHost sets c up for host as a dialler does: ServerName, and the name
// VerifyConnection sees, which crypto/tls leaves empty for IP addresses.
func forHost(c *tls.Config, host string) *tls.Config {
	c.ServerName = host
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		cs.ServerName = host
		return verify(cs)
	}
	return c
}
