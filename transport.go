package nano

import (
	"net"
	"net/http"
	"time"
)

// orDefault returns rt, or when rt is nil the transport servers, services
// and clients use by default, whose answers' heads are bounded by
// maxHeaderBytes (none if negative).
func orDefault(rt http.RoundTripper, maxHeaderBytes int) http.RoundTripper {
	if rt != nil {
		return rt
	}
	limit := int64(maxHeaderBytes)
	if limit < 0 {
		limit = 1 << 62
	}
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: limit,
		DisableCompression:     true,
	}
}

// closeIdle closes the idle connections of a transport that keeps them.
func closeIdle(rt http.RoundTripper) {
	if ci, ok := rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
