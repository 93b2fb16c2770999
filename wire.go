package nano

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Registration is the body of POST /register: the pattern a service
// handles and where it is reached. Services also describe themselves with it
// in the "Service" field of a ServiceRequest answer.
//
// ServiceAddress and ServerAddress are host:port, as the original library
// sent them; the ports are repeated in ServicePort and ServerPort.
type Registration struct {
	Pattern        string `json:"Pattern"`
	ServiceAddress string `json:"ServiceAddress"`
	ServicePort    int    `json:"ServicePort"`
	ServerAddress  string `json:"ServerAddress"`
	ServerPort     int    `json:"ServerPort"`
	// TLS says that the instance serves HTTPS: it is called at
	// https://ServiceAddress, and its certificate must be valid for the
	// host of ServiceAddress. The original library ignores the field.
	TLS bool `json:"TLS,omitempty"`
}

// target returns where the registered instance is called: its address,
// after "https://" for TLS.
func (r Registration) target() string { return targetOf(r.ServiceAddress, r.TLS) }

// targetOf returns the target of an instance at addr: addr for plain
// HTTP, "https://"+addr for TLS. Mirrors, the registry and the peer
// caches key instances by target, so a plain and a TLS instance at one
// address are two instances.
func targetOf(addr string, secure bool) string {
	if secure {
		return httpsPrefix + addr
	}
	return addr
}

// splitTarget returns the address of a target and whether it speaks TLS.
func splitTarget(t string) (addr string, secure bool) {
	if a, ok := strings.CutPrefix(t, httpsPrefix); ok {
		return a, true
	}
	return t, false
}

// httpsPrefix starts the target of a TLS instance.
const httpsPrefix = "https://"

// validTarget checks a target read from the registry or an answer.
func validTarget(t string) error {
	addr, _ := splitTarget(t)
	return dialAddr(addr)
}

// normalize validates a registration received from the network and returns
// it with a canonical pattern and ServiceAddress as host:port. A
// ServiceAddress without a port takes ServicePort.
func (r Registration) normalize() (Registration, error) {
	p, err := parsePattern(r.Pattern)
	if err != nil {
		return r, err
	}
	r.Pattern = p
	addr := r.ServiceAddress
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), strconv.Itoa(r.ServicePort))
	}
	host, port, err := splitHostPort(addr)
	if err == nil && port == 0 {
		err = fmt.Errorf("%q has port 0", addr)
	}
	if err != nil {
		return r, fmt.Errorf("%w: ServiceAddress: %v", ErrInvalidMessage, err)
	}
	r.ServiceAddress = net.JoinHostPort(host, strconv.Itoa(port))
	r.ServicePort = port
	return r, nil
}

// splitHostPort splits "host:port" with a port from 0 to 65535. It rejects
// empty hosts, URLs and paths.
func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", addr)
	}
	if len(host) > 255 || strings.ContainsAny(host, "/?#@ \t\r\n") || hasControl(host) {
		return "", 0, fmt.Errorf("%q is not a host:port address", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port (1-65535)", addr)
	}
	return host, port, nil
}

// dialAddr checks an address to connect to: host:port with a port other
// than 0.
func dialAddr(addr string) error {
	_, port, err := splitHostPort(addr)
	if err == nil && port == 0 {
		err = fmt.Errorf("%q has port 0", addr)
	}
	return err
}

// registered is the answer to POST /register: the stored registration and
// how long it lives unless renewed.
type registered struct {
	Registration
	TTL float64 `json:"TTL"` // seconds
}

// resolution is the answer to GET /resolve.
type resolution struct {
	Pattern   string             `json:"Pattern"`   // the registered pattern that matched
	Instances []resolvedInstance `json:"Instances"` // its live instances
	TTL       float64            `json:"TTL"`       // seconds an instance lives unless renewed
}

type resolvedInstance struct {
	ServiceAddress string    `json:"ServiceAddress"`
	TLS            bool      `json:"TLS,omitempty"` // call it over HTTPS
	Expires        time.Time `json:"Expires"`
	Permanent      bool      `json:"Permanent,omitempty"` // an original service's: it never expires
	Ejected        bool      `json:"Ejected,omitempty"`   // in GET /services: ejected as an outlier by this server now
}

// envelope is a service's answer to a message with "ServiceRequest": true.
// encoding/json writes Payload as base64, as the original library did.
type envelope struct {
	Service *Registration `json:"Service"` // nil in an answer that is not an envelope
	Payload []byte        `json:"Payload"`
}

// A service of this library answers a request that carries
// "Nano-Envelope: header" with the handler's bytes as the body and the
// pattern that matched in a "Nano-Service" header, whether or not the
// message asks for the ServiceRequest envelope: the same facts as the JSON
// envelope without encoding the payload in base64 and decoding it again.
// Services that do not know the header (the original library's) answer
// with the handler's bytes, or with the JSON envelope when the message
// asks for it; the client reads both as the original's Act did.
const (
	envelopeHeader   = "Nano-Envelope"
	envelopeInHeader = "header"
	serviceHeader    = "Nano-Service"
)

// errorHeader tells who answered with an error: a service's 404 for a
// message none of its handlers matches says "no-handler"; an error a
// handler returned says "handler"; a server's 503 when no instance of a
// registered pattern could be reached says "no-instance". Other errors of
// the library have none.
const (
	errorHeader     = "Nano-Error"
	noHandlerError  = "no-handler"
	handlerError    = "handler"
	noInstanceError = "no-instance" // a server's 503: no instance of the pattern answered
)

// envelopeInHeaderValue is the value of the Nano-Envelope field of the
// calls a Client sends, shared by their headers: it is never modified.
var envelopeInHeaderValue = []string{envelopeInHeader}

// checkAnswer refuses an answer that a proxy must not pass on and a
// client must not read, whatever transport carried it: a status below 200
// (the transport consumes the informational ones; a 101 is never asked
// for; below 100 is no status), or a header field whose name or value
// net/http would not accept from a client. (http.Transport lets a name
// with a space through, and net/http's server would drop the field when
// writing it: a proxy must refuse the answer instead.)
func checkAnswer(resp *http.Response) error {
	if resp.StatusCode < 200 {
		return fmt.Errorf("%w: invalid answer status %d", ErrServiceUnavailable, resp.StatusCode)
	}
	for k, vv := range resp.Header {
		if !validFieldName(k) {
			return fmt.Errorf("%w: invalid answer header field name", ErrServiceUnavailable)
		}
		for _, v := range vv {
			if !validFieldValue(v) {
				return fmt.Errorf("%w: invalid answer header field value", ErrServiceUnavailable)
			}
		}
	}
	return nil
}

// validFieldName reports whether s is a token (RFC 9110, section 5.1).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

// validFieldValue reports whether s holds no control character but tab
// (RFC 9110, section 5.5).
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// tokenByte marks the bytes a token may hold.
var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// decodeAnswer reads a service's answer to a call: the handler's bytes;
// an error answer becomes an *Error. A service of this library names
// itself in the Nano-Service field and answers with the handler's bytes.
// Any other 2xx answer is read as the original's Act read it: when it
// decodes as the JSON envelope of a service (a Service with a Pattern), the
// envelope's Payload, else the body as it came.
func decodeAnswer(status int, header http.Header, data []byte) (envelope, error) {
	var env envelope
	if status < 200 || status > 299 {
		by := header.Get(errorHeader)
		err := errorFromResponse(status, header, data)
		if by == noHandlerError {
			return env, &notHandledError{err}
		}
		return env, err
	}
	if len(header[serviceHeader]) == 0 {
		if err := json.Unmarshal(data, &env); err == nil && env.Service != nil && env.Service.Pattern != "" {
			return env, nil
		}
	}
	return envelope{Payload: data}, nil
}

// checkObject checks that msg is a JSON object whose Pattern and
// ServiceRequest fields, if any, have the right types.
func checkObject(msg []byte) error {
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrInvalidMessage)
	}
	_, err := readMessage(trimmed)
	return err
}

// withServiceRequest returns msg, a JSON object checkObject accepted,
// with "ServiceRequest": true, adding the field before the closing brace
// when the message does not already ask for the envelope.
func withServiceRequest(msg []byte) []byte {
	trimmed := bytes.TrimSpace(msg)
	if m, err := readMessage(trimmed); err != nil || m.ServiceRequest {
		return msg
	}
	// A later duplicate key wins in encoding/json, so appending overrides a
	// "ServiceRequest": false the message may carry.
	inner := bytes.TrimSpace(trimmed[1 : len(trimmed)-1])
	out := make([]byte, 0, len(trimmed)+24)
	out = append(out, trimmed[:len(trimmed)-1]...)
	if len(inner) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"ServiceRequest":true}`...)
	return out
}
