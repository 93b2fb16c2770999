package nano

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// hopHeaders are the hop-by-hop headers a proxy must not forward
// (RFC 9110, section 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// jsonContentType is the Content-Type field of JSON messages and answers,
// shared by the headers that carry it: it is never modified.
var jsonContentType = []string{"application/json"}

// copyHeader copies the end-to-end headers of src to dst.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if !hopByHop(src, k) {
			dst[k] = append(dst[k], vv...)
		}
	}
}

// hopByHop reports whether the field k of h concerns one connection only:
// a hop-by-hop header, one that h's Connection header names, or the
// Content-Length and Host that each hop sets for itself.
func hopByHop(h http.Header, k string) bool {
	if k == "Content-Length" || k == "Host" || slices.Contains(hopHeaders, k) {
		return true
	}
	for _, f := range h["Connection"] {
		for name := range strings.SplitSeq(f, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(name)) == k {
				return true
			}
		}
	}
	return false
}

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, limit)
	}
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 { // known length: one buffer of that size
		body = make([]byte, n)
		_, err = io.ReadFull(r.Body, body)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("body shorter than its Content-Length")
		}
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("%w: reading body: timed out", ErrInvalidMessage)
		}
		return nil, fmt.Errorf("%w: reading body: %v", ErrInvalidMessage, bodyError(err))
	}
	return body, nil
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// fatal logs err and exits; only the original's compatible entry points,
// whose signatures leave no room for an error, use it.
func fatal(log *slog.Logger, msg string, err error) {
	log.Error(msg, "error", err)
	os.Exit(1)
}

// newTransport returns the tuned transport for the control calls of
// services and clients (registration, /resolve); messages go through the
// upstream pool. Keep-alive pools, bounded dials, no proxy from the
// environment, and bodies passed through as they are.
func newTransport() *http.Transport {
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// durationOr returns def for zero, zero (no limit) for a negative d, and d
// otherwise.
func durationOr(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	default:
		return d
	}
}

// bodyError is the part of a body reading error that may be shown to the
// client: what http.ReadRequest's body reader says about the framing, not
// the addresses a network error names.
func bodyError(err error) string {
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return "connection failed"
	}
	return err.Error()
}
