package nano

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// How servers and services serve HTTP: through net/http's http.Server,
// configured from their options, behind a listener that bounds the
// connections open at once, with a count of the handlers running so that
// Shutdown knows when the last one is done.

// httpOptions are the options of servers and services that configure
// their http.Server, with defaults applied: zero or negative durations
// mean no limit.
type httpOptions struct {
	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout time.Duration
	maxHeaderBytes                                            int         // negative: no limit
	maxConns                                                  int         // negative: no limit
	tls                                                       *tls.Config // nil: plain HTTP
	log                                                       *slog.Logger
}

// Defaults of the HTTP options of servers and services.
const (
	defaultReadHeaderTimeout = 5 * time.Second
	defaultReadTimeout       = 30 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
	defaultMaxHeaderBytes    = http.DefaultMaxHeaderBytes
	defaultMaxConns          = 10_000
	defaultMaxBodyBytes      = 4 << 20
)

// endpoint serves a handler the way servers and services do. A zero
// endpoint is not usable; it is safe for concurrent use.
type endpoint struct {
	handler http.Handler
	srv     *http.Server
	conns   *connLimit  // shared by every listener served; nil: no limit
	tls     *tls.Config // serves HTTPS with it; nil: plain HTTP

	mu      sync.RWMutex   // guards closed against running.Add
	closed  bool           // set by shutdown: handlers refuse new requests
	running sync.WaitGroup // handlers running, whichever http.Server runs them
}

func newEndpoint(h http.Handler, o httpOptions) *endpoint {
	e := &endpoint{handler: h, tls: serverTLS(o.tls)}
	maxHeader := o.maxHeaderBytes
	if maxHeader < 0 {
		maxHeader = math.MaxInt32
	}
	e.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: noLimit(o.readHeaderTimeout),
		ReadTimeout:       o.readTimeout,
		WriteTimeout:      o.writeTimeout,
		IdleTimeout:       noLimit(o.idleTimeout),
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(o.log.Handler(), slog.LevelWarn),
	}
	if o.maxConns > 0 {
		e.conns = &connLimit{slots: make(chan struct{}, o.maxConns), log: o.log}
	}
	return e
}

// noLimit returns d, or -1 (none, to http.Server) for zero: a zero
// ReadHeaderTimeout or IdleTimeout would mean ReadTimeout there.
func noLimit(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// ServeHTTP runs the handler, counted, unless shutdown began; requests that
// arrive after it get 503.
func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		closeUnread(w, r)
		writeError(w, r, ErrClosed)
		return
	}
	e.running.Add(1)
	e.mu.RUnlock()
	defer e.running.Done()
	e.handler.ServeHTTP(w, r)
}

// serve serves the connections of l until shutdown, when it returns
// ErrClosed. It closes l.
func (e *endpoint) serve(l net.Listener) error {
	l = e.conns.wrap(l)
	if e.tls != nil {
		// http.Server makes the handshake, bounded by its read timeouts.
		l = tls.NewListener(l, e.tls)
	}
	err := e.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return err
}

// shutdown stops accepting and waits for the requests of its connections
// to finish, or for ctx to end, when it closes them, which cancels their
// contexts. From then on, requests that reach the handler by another
// http.Server are refused. Handlers may still be returning: wait waits for
// them.
func (e *endpoint) shutdown(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if err != nil {
		e.srv.Close()
	}
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	return err
}

// wait waits for the handlers running to return.
func (e *endpoint) wait() { e.running.Wait() }

// closeUnread marks the answer to a request whose body is left unread (a
// refusal before reading it, or after failing to): the connection closes
// after the answer, rather than wait for the rest of the body to tell it
// from a next request, which a slow or hostile client could make take
// long. (net/http would read up to 256 KiB of it before answering.)
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// readBody reads a request body of at most limit bytes (none if limit is
// negative). Memory follows what arrives, not what the request announces:
// the buffer starts small and grows with the bytes read. A request that
// announces more than limit is refused before anything is read, so a
// client waiting for "100 Continue" gets the 413 instead.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if limit >= 0 && r.ContentLength > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, limit)
	}
	body := r.Body
	if limit >= 0 && r.ContentLength < 0 { // a known length is bounded already
		body = http.MaxBytesReader(w, body, limit)
	}
	size := int64(512)
	if r.ContentLength >= 0 {
		size = min(r.ContentLength+1, maxFirstRead) // +1: room to see the end
	}
	buf := make([]byte, 0, size)
	for {
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, bodyError(err, limit)
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
	}
}

// maxFirstRead bounds the buffer a body is first read into, whatever
// length the request announces.
const maxFirstRead = 16 << 10

// bodyError is the error a client sees for a body that could not be read:
// what went wrong, without the addresses a network error names.
func bodyError(err error, limit int64) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, limit)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: reading body: timed out", ErrInvalidMessage)
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return fmt.Errorf("%w: reading body: connection failed", ErrInvalidMessage)
	}
	return fmt.Errorf("%w: reading body: %v", ErrInvalidMessage, err)
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, nil, err)
		return
	}
	writeBody(w, status, append(body, '\n'))
}

// writeBody answers with a JSON body, never chunked: net/http announces
// the length of a body it holds whole in its buffer (up to heldWhole
// bytes), and writeBody announces the length of a longer one.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if len(body) > heldWhole {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(status)
	w.Write(body)
}

// heldWhole is the size of the buffer in which net/http's server holds
// the beginning of an answer: an answer that fits gets its Content-Length
// from net/http.
const heldWhole = 2048

// jsonContentType is the Content-Type field of JSON messages and answers,
// shared by the headers that carry it: it is never modified.
var jsonContentType = []string{"application/json"}

// fatal logs err and exits; only the original's compatible entry points,
// whose signatures leave no room for an error, use it.
func fatal(log *slog.Logger, msg string, err error) {
	log.Error(msg, "error", err)
	os.Exit(1)
}

// durationOr returns def for zero and d otherwise: a negative d stays
// negative, which means no limit.
func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
