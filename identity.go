package nano

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Identities maps the identities of client certificates to the patterns
// each may register at a server (ServerOptions.Identities). An identity
// is a URI SAN of the certificate, such as a SPIFFE ID
// ("spiffe://example.org/ns/shop/sa/billing"), or a DNS SAN
// ("billing.shop.svc"); a certificate may carry several, and one that
// allows the pattern is enough. A pattern listed allows itself and the
// patterns it is a whole-field prefix of, as in routing: "role:billing"
// allows "role:billing,cmd:charge" but not "role:billingx". "*" allows
// every pattern. An identity not listed may register nothing.
//
// The same rule applies to deregistrations: an identity may remove only
// instances of the patterns it may register (at whatever address they
// were registered, as it may register its patterns at any address).
type Identities map[string][]string

// LoadIdentities reads Identities from a JSON file holding one object
// whose keys are identities and whose values are lists of patterns:
//
//	{"spiffe://example.org/ns/shop/sa/billing": ["role:billing"],
//	 "stock.shop.svc": ["role:stock,cmd:reserve", "role:stock,cmd:release"]}
//
// It fails with ErrInvalidOptions if the file is not such an object, or
// lists a pattern that is not valid.
func LoadIdentities(file string) (Identities, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: identities: %v", ErrInvalidOptions, err)
	}
	var ids Identities
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&ids); err != nil {
		return nil, fmt.Errorf("%w: identities: %s: %v", ErrInvalidOptions, file, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: identities: %s holds more than one JSON value", ErrInvalidOptions, file)
	}
	if ids == nil {
		return nil, fmt.Errorf("%w: identities: %s holds null, not an object", ErrInvalidOptions, file)
	}
	return ids.normalize()
}

// normalize checks the identities and returns them with canonical
// patterns. Nil stays nil.
func (ids Identities) normalize() (Identities, error) {
	if ids == nil {
		return nil, nil
	}
	out := make(Identities, len(ids))
	for id, patterns := range ids {
		if strings.TrimSpace(id) == "" {
			return nil, fmt.Errorf("%w: identities: an identity is empty", ErrInvalidOptions)
		}
		list := make([]string, 0, len(patterns))
		for _, p := range patterns {
			if p != "*" {
				var err error
				if p, err = parsePattern(p); err != nil {
					return nil, fmt.Errorf("%w: identities: %s: %v", ErrInvalidOptions, id, err)
				}
			}
			list = append(list, p)
		}
		out[id] = list
	}
	return out, nil
}

// allows reports whether identity id may register pattern p, canonical.
func (ids Identities) allows(id, p string) bool {
	for _, e := range ids[id] {
		if e == "*" || p == e || strings.HasPrefix(p, e) && p[len(e)] == ',' {
			return true
		}
	}
	return false
}

// identitiesOf returns the identities a certificate names: its URI SANs,
// then its DNS SANs.
func identitiesOf(cert *x509.Certificate) []string {
	out := make([]string, 0, len(cert.URIs)+len(cert.DNSNames))
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return append(out, cert.DNSNames...)
}

// mayRegister checks that the client of r may register or deregister
// pattern p under the server's Identities; nil when it may, or when the
// server has none. The client's certificate counts only once crypto/tls
// verified it against ClientCAs: a callback of the program's own may not
// have run for the connection (GetConfigForClient replaces the
// configuration that holds it), so it is not taken for a verification.
func (s *Server) mayRegister(r *http.Request, p string) error {
	loaded := s.identities.Load()
	if loaded == nil {
		return nil
	}
	ids := *loaded
	if r.TLS == nil {
		return fmt.Errorf("%w: registrations require TLS with a client certificate", ErrForbidden)
	}
	if len(r.TLS.PeerCertificates) == 0 || len(r.TLS.VerifiedChains) == 0 {
		return fmt.Errorf("%w: registrations require a verified client certificate", ErrForbidden)
	}
	names := identitiesOf(r.TLS.PeerCertificates[0])
	for _, id := range names {
		if ids.allows(id, p) {
			return nil
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: the client certificate names no identity (URI or DNS name)", ErrForbidden)
	}
	return fmt.Errorf("%w: %s may not %s %q", ErrForbidden, strings.Join(names, ", "), strings.TrimPrefix(r.URL.Path, "/"), p)
}

// SetIdentities replaces the Identities of a server started with some,
// for a policy that changes while the server runs: registrations and
// deregistrations from then on are checked against ids (nano-server reads
// its identities file again when it changes). It fails with
// ErrInvalidOptions when ids is nil or not valid, or when the server was
// started without Identities: turning the check on or off takes a
// restart.
func (s *Server) SetIdentities(ids Identities) error {
	if s.identities.Load() == nil {
		return fmt.Errorf("%w: the server was started without Identities", ErrInvalidOptions)
	}
	if ids == nil {
		return fmt.Errorf("%w: nil Identities: the check cannot be turned off while the server runs", ErrInvalidOptions)
	}
	ids, err := ids.normalize()
	if err != nil {
		return err
	}
	s.identities.Store(&ids)
	return nil
}
