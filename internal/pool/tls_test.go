package pool

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestHTTPS: https requests go over TLS with the configuration TLSConfig
// gives for the host, kept alive like http ones (one handshake for many
// requests); a handshake that fails is a dial error, and a connection the
// server closed while idle is replaced without failing a request.
func TestHTTPS(t *testing.T) {
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.StartTLS()
	defer ts.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	var hosts []string
	tr := &Transport{TLSConfig: func(host string) *tls.Config {
		hosts = append(hosts, host)
		return &tls.Config{RootCAs: roots, ServerName: host}
	}}
	defer tr.CloseIdleConnections()
	get := func(tr *Transport, path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for range 20 {
		if got, err := get(tr, "/x"); err != nil || got != "/x" {
			t.Fatalf("GET over TLS: %q, %v", got, err)
		}
	}
	if n := conns.Load(); n != 1 || len(hosts) != 1 || hosts[0] != "127.0.0.1" {
		t.Errorf("20 requests: %d connections, TLSConfig asked for %q; want one connection for 127.0.0.1", n, hosts)
	}

	ts.CloseClientConnections() // the server drops the idle connection
	if got, err := get(tr, "/y"); err != nil || got != "/y" {
		t.Fatalf("after the server closed the idle connection: %q, %v", got, err)
	}

	untrusting := &Transport{TLSConfig: func(host string) *tls.Config { return &tls.Config{RootCAs: x509.NewCertPool(), ServerName: host} }}
	_, err := get(untrusting, "/z")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("a failed handshake: %v; want a dial error", err)
	}
}
