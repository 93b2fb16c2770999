package nano

import (
	"crypto/tls"
	"net/http"

	"github.com/domWinter/go-nano/internal/pool"
)

// orDefault returns rt, or when rt is nil the transport servers, services
// and clients use by default: the package's pool of kept-alive HTTP/1.1
// connections (up to 256 idle per address, closed after 90 s unused, 5 s
// to connect), whose answers' heads are bounded by maxHeaderBytes (none if
// negative) and whose TLS connections are configured by tlsBase (see
// clientTLS). Its scope and guarantees are in the package documentation.
func orDefault(rt http.RoundTripper, maxHeaderBytes int, tlsBase *tls.Config) http.RoundTripper {
	if rt != nil {
		return rt
	}
	return &pool.Transport{MaxResponseHeaderBytes: int64(maxHeaderBytes), TLSConfig: clientTLS(tlsBase)}
}

// closeIdle closes the idle connections of a transport that keeps them.
func closeIdle(rt http.RoundTripper) {
	if ci, ok := rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
