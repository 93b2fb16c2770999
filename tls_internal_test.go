package nano

import (
	"bufio"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestClientTLSResumes: the connections of one transport share a session
// cache, so that a second connection to a host resumes the session of the
// first instead of making a full handshake; and each is checked for the
// host dialled.
func TestClientTLSResumes(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ts.Close()
	base := &tls.Config{RootCAs: ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	config := clientTLS(base)
	addr := ts.Listener.Addr().String()
	resumed := func() bool {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, config("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A request and its answer: TLS 1.3 sends the ticket after the
		// handshake, and the client takes it while reading.
		conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return conn.ConnectionState().DidResume
	}
	if resumed() {
		t.Error("the first connection resumed a session")
	}
	if !resumed() {
		t.Error("the second connection made a full handshake")
	}
	if base.ServerName != "" || base.ClientSessionCache != nil {
		t.Error("clientTLS changed the configuration it was given")
	}
	if _, err := tls.Dial("tcp", addr, config("nano.invalid")); err == nil {
		t.Error("a certificate for 127.0.0.1 was accepted for nano.invalid")
	}
}
