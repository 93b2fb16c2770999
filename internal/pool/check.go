package pool

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// checkRequest reports what makes req unfit to send, before any
// connection is used, and returns the address to dial and the target of
// the request line. Like http.Transport, it refuses header fields with
// invalid names or values.
func checkRequest(req *http.Request) (addr, target string, err error) {
	switch {
	case req.URL == nil:
		return "", "", errors.New("pool: nil Request.URL")
	case req.Header == nil:
		return "", "", errors.New("pool: nil Request.Header")
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return "", "", fmt.Errorf("pool: unsupported protocol scheme %q", req.URL.Scheme)
	case req.URL.Host == "":
		return "", "", errors.New("pool: no Host in request URL")
	case req.Method != "" && !isToken(req.Method):
		return "", "", fmt.Errorf("pool: invalid method %q", req.Method)
	case req.Method == http.MethodConnect:
		return "", "", errors.New("pool: CONNECT is not supported")
	case asksUpgrade(req.Header):
		return "", "", errors.New("pool: protocol upgrades are not supported")
	case len(req.Trailer) > 0:
		return "", "", errors.New("pool: request trailers are not supported")
	case len(req.TransferEncoding) > 0 && !isChunked(req.TransferEncoding):
		return "", "", fmt.Errorf("pool: unsupported Transfer-Encoding %q", req.TransferEncoding)
	case req.Body == nil && req.ContentLength != 0:
		return "", "", fmt.Errorf("pool: Request.ContentLength=%d with nil Body", req.ContentLength)
	case !validHost(requestHost(req)):
		return "", "", fmt.Errorf("pool: invalid Host %q", requestHost(req))
	}
	if err := checkHeader(req.Header); err != nil {
		return "", "", err
	}
	target = req.URL.RequestURI()
	if strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", "", errors.New("pool: invalid character in request target")
	}
	return dialAddr(req.URL), target, nil
}

// checkHeader reports the first field of h whose name or value net/http
// would refuse to write.
func checkHeader(h http.Header) error {
	for name, values := range h {
		if !isToken(name) {
			return fmt.Errorf("pool: invalid header field name %q", name)
		}
		for _, v := range values {
			if !validFieldValue(v) {
				return fmt.Errorf("pool: invalid header field value for %q", name) // the value may be a secret
			}
		}
	}
	return nil
}

// closeBody closes req's body, if it has one.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// wantsClose reports whether req asks that its connection be closed after
// the exchange.
func wantsClose(req *http.Request) bool {
	return req.Close || hasToken(req.Header["Connection"], "close")
}

// asksUpgrade reports whether a request with header h asks to switch
// protocols.
func asksUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && hasToken(h["Connection"], "upgrade")
}

// requestHost is the value of req's Host field.
func requestHost(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// dialAddr is the "host:port" a request for u goes to.
func dialAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// isChunked reports whether a Transfer-Encoding of te is chunked alone.
func isChunked(te []string) bool {
	return len(te) == 1 && te[0] == "chunked"
}

// hasToken reports whether the comma-separated lists of values hold
// token, in any case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.Trim(item, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// isToken reports whether s is a non-empty token of RFC 9110, as the name
// of a header field or a method must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

// isTokenByte reports whether b may appear in a token: a letter, a digit,
// or one of !#$%&'*+-.^_`|~.
func isTokenByte(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// validFieldValue reports whether v may be the value of a header field:
// it holds no control character other than the tab.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// validHost reports whether h may be the value of the Host field: it
// holds only letters, digits and the punctuation of a host and port,
// IPv6 literals and zones included. An empty h is valid.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!$%&'()*+,-.:;=[]_~", b) >= 0:
		default:
			return false
		}
	}
	return true
}
