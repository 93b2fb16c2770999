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
	named := connectionNamed(src)
	for k, vv := range src {
		if !hopByHop(k, named) {
			dst[k] = append(dst[k], vv...)
		}
	}
}

// hopByHop reports whether the field k concerns one connection only: a
// hop-by-hop header, one that the header's Connection field names (named,
// from connectionNamed), or the Content-Length and Host that each hop sets
// for itself.
func hopByHop(k string, named map[string]bool) bool {
	return k == "Content-Length" || k == "Host" || slices.Contains(hopHeaders, k) || named[k]
}

// maxConnectionNames bounds the names a message's Connection header may
// list; no client needs more than a few.
const maxConnectionNames = 64

// checkConnection refuses a Connection header that lists more names than
// maxConnectionNames.
func checkConnection(h http.Header) error {
	n := 0
	for _, f := range h["Connection"] {
		n += strings.Count(f, ",") + 1
	}
	if n > maxConnectionNames {
		return fmt.Errorf("%w: the Connection header lists over %d names", ErrInvalidMessage, maxConnectionNames)
	}
	return nil
}

// connectionNamed returns the canonical names of the fields h's Connection
// header lists, or nil when it has none (the usual case). Built once per
// header, it keeps the filtering linear in the header's size however many
// names a client lists.
func connectionNamed(h http.Header) map[string]bool {
	values := h["Connection"]
	if len(values) == 0 {
		return nil
	}
	named := make(map[string]bool)
	for _, f := range values {
		for name := range strings.SplitSeq(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				named[http.CanonicalHeaderKey(name)] = true
			}
		}
	}
	return named
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
