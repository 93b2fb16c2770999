package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// endpoints runs the http.Servers of a Server or Service and shuts them
// down together. A zero endpoints is ready to use; it is safe for
// concurrent use.
type endpoints struct {
	mu      sync.Mutex                // guards servers, fresh and closed
	servers map[*http.Server]struct{} // serving, until shutdown
	fresh   map[net.Conn]struct{}     // accepted, no request read yet
	closed  bool                      // set by shutdown
}

// serve runs hs on l until shutdown, then returns ErrClosed. It closes l.
func (e *endpoints) serve(hs *http.Server, l net.Listener) error {
	hs.ConnState = e.connState
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	if e.servers == nil {
		e.servers = make(map[*http.Server]struct{})
	}
	e.servers[hs] = struct{}{}
	e.mu.Unlock()

	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return err
}

// connState tracks the connections that have not sent a request. net/http
// waits 5 seconds for those before a graceful shutdown ends; they carry no
// request, so shutdown closes them at once.
func (e *endpoints) connState(c net.Conn, state http.ConnState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case state == http.StateNew && e.closed:
		c.Close()
	case state == http.StateNew:
		if e.fresh == nil {
			e.fresh = make(map[net.Conn]struct{})
		}
		e.fresh[c] = struct{}{}
	default:
		delete(e.fresh, c)
	}
}

// shutdown shuts every server down gracefully, waiting for the requests in
// flight to end or ctx to be done. Only the first call does anything.
func (e *endpoints) shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	servers := e.servers
	e.servers = nil
	for c := range e.fresh {
		c.Close()
	}
	e.mu.Unlock()

	errs := make(chan error, len(servers))
	for hs := range servers {
		go func() { errs <- hs.Shutdown(ctx) }()
	}
	var all []error
	for range servers {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// newHTTPServer returns an http.Server with the given limits, logging its
// own errors at debug level.
func newHTTPServer(h http.Handler, log *slog.Logger, readHeader, read, write, idle time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       read,
		WriteTimeout:      write,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// hopHeaders are the hop-by-hop headers a proxy must not forward
// (RFC 9110, section 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// copyHeader copies the end-to-end headers of src to dst.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k], vv...)
	}
	for _, f := range src.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			if k = strings.TrimSpace(k); k != "" {
				dst.Del(k)
			}
		}
	}
	for _, k := range hopHeaders {
		dst.Del(k)
	}
	dst.Del("Content-Length")
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
		return nil, fmt.Errorf("%w: reading body: %v", ErrInvalidMessage, err)
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// fatal logs err and exits; only the original's compatible entry points,
// whose signatures leave no room for an error, use it.
func fatal(log *slog.Logger, msg string, err error) {
	log.Error(msg, "error", err)
	os.Exit(1)
}

// newTransport returns the tuned transport servers and clients share among
// their calls: keep-alive pools large enough that a busy proxy reuses its
// connections, bounded dials, no proxy from the environment, and bodies
// passed through as they are.
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
