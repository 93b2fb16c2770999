package nano

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
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

// FuzzIdentities checks the reading of an identities file: a JSON object
// of lists of patterns is accepted only with valid patterns, which come out
// canonical; each allows itself and its whole-field extensions, and never
// a pattern whose last field merely starts like its own; an identity not
// listed may register nothing.
func FuzzIdentities(f *testing.F) {
	for _, s := range []string{
		`{"spiffe://x/ns/a/sa/b": ["role:a"], "b.svc": [" role:b , cmd:c ", "*"]}`,
		`{"a": ["role:a,,x"]}`, `{"": ["x"]}`, `null`, `{"a": null}`, `[1]`, `{"a": ["\u0000"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw Identities
		if json.Unmarshal(data, &raw) != nil {
			return
		}
		ids, err := raw.normalize()
		if err != nil {
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not wrap ErrInvalidOptions", err)
			}
			return
		}
		if (raw == nil) != (ids == nil) || len(ids) != len(raw) {
			t.Fatalf("normalize(%v) = %v", raw, ids)
		}
		for id, patterns := range ids {
			if ids.allows(id+"\x00other", "role:a") {
				t.Fatalf("an identity not listed is allowed")
			}
			for _, p := range patterns {
				if p == "*" {
					continue
				}
				if again, err := parsePattern(p); err != nil || again != p {
					t.Fatalf("pattern %q of %q is not canonical (%q, %v)", p, id, again, err)
				}
				if !ids.allows(id, p) {
					t.Fatalf("%q is not allowed its own pattern %q", id, p)
				}
				one := Identities{id: {p}}
				if longer := p + ",x:y"; len(longer) <= MaxPatternBytes && !one.allows(id, longer) {
					t.Fatalf("%q with %q is not allowed %q", id, p, longer)
				}
				if one.allows(id, p+"x") {
					t.Fatalf("%q with %q is allowed %q", id, p, p+"x")
				}
			}
		}
	})
}
