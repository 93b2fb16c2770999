package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport is an http.RoundTripper for "http" URLs, and "https" ones
// when TLSConfig is set, that keeps connections alive between requests,
// per host. Each field's zero value
// selects the default its comment gives, so the zero Transport is ready to
// use. The fields must not change once the Transport is in use. A
// Transport is safe for concurrent use by multiple goroutines.
type Transport struct {
	// DialTimeout bounds the setting up of a new connection, on top of
	// the request's context. Zero means 5 seconds; a negative value means
	// no bound but the context's. It is not applied to DialContext.
	DialTimeout time.Duration

	// KeepAlive is the interval of the TCP keep-alive probes of new
	// connections. Zero means 30 seconds; a negative value turns the
	// probes off. It is not applied to DialContext.
	KeepAlive time.Duration

	// MaxIdleConnsPerHost is how many idle connections are kept per host
	// for later requests. Zero means 256; a negative value means none:
	// each connection is closed after its exchange.
	MaxIdleConnsPerHost int

	// IdleConnTimeout is how long a connection may stay idle before it is
	// closed, without anyone calling anything. Zero means 90 seconds; a
	// negative value keeps idle connections until they are used, closed
	// by CloseIdleConnections, or found closed by the peer.
	IdleConnTimeout time.Duration

	// MaxResponseHeaderBytes bounds the head of an answer: its status
	// line and header fields, together with those of the informational
	// answers before it. An answer over the bound fails the round trip
	// and closes the connection. Zero means 1 MiB; a negative value means
	// no bound.
	MaxResponseHeaderBytes int64

	// DialContext, if not nil, sets up new connections in place of a
	// net.Dialer, for the network "tcp" and an address "host:port".
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSConfig, if not nil, gives the TLS configuration of a connection
	// for an "https" URL to host (a name or an IP address, without port);
	// the handshake is part of setting the connection up, and a
	// connection is kept alive like any other. Nil means "https" URLs
	// fail.
	TLSConfig func(host string) *tls.Config

	mu      sync.Mutex         // guards idle, janitor and armed
	idle    map[string][]*conn // by address, the most recently used last
	janitor *time.Timer        // closes expired idle connections; nil until needed
	armed   bool               // janitor is set to fire
}

// Defaults of the Transport's fields.
const (
	defaultDialTimeout            = 5 * time.Second
	defaultKeepAlive              = 30 * time.Second
	defaultMaxIdleConnsPerHost    = 256
	defaultIdleConnTimeout        = 90 * time.Second
	defaultMaxResponseHeaderBytes = 1 << 20
)

// RoundTrip sends req and returns the head of its answer, whose body the
// caller must read and close; reading it to its end hands the connection
// back for later requests. RoundTrip blocks until the answer's head
// arrives, req's context ends, or the exchange fails. It closes req.Body,
// even on errors.
//
// An error from RoundTrip means no answer, never a request sent twice. A
// request that fails before it is written (invalid, or its connection
// could not be set up) reached no peer: the dial error, a *net.OpError
// with Op "dial", can be found with errors.As. An error after writing
// began may come after the peer acted on the request. When the context
// ended the exchange, errors.Is reports the context's error.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	addr, target, err := checkRequest(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, fmt.Errorf("pool: %w", err)
	}
	key := addr // connections for https are kept apart from those for http
	if req.URL.Scheme == "https" {
		if t.TLSConfig == nil {
			closeBody(req)
			return nil, errors.New("pool: https without TLSConfig")
		}
		key = "https://" + addr
	}
	c := t.getIdle(key)
	if c == nil {
		c, err = t.dial(ctx, addr, key, req.URL.Scheme == "https")
		if err != nil {
			closeBody(req)
			return nil, err
		}
	}
	return t.exchange(ctx, c, req, target)
}

// CloseIdleConnections closes the connections that are idle now. It does
// not interrupt connections in use, which go back to the pool when their
// exchange is over, as before.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.janitor != nil {
		t.janitor.Stop()
	}
	t.armed = false
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.close()
		}
	}
}

// exchange writes req on c, with target as the request target, and reads
// the head of the answer. The connection goes back to the pool when the
// answer's body is read to its end, at once when it has none.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, target string) (*http.Response, error) {
	c.watch(ctx)
	err := writeRequest(c.bw, req, target)
	closeBody(req)
	if err != nil {
		c.unwatch()
		c.close()
		return nil, c.fail("writing request", err)
	}
	resp, err := c.readAnswer(req, t.maxResponseHeaderBytes())
	if err != nil {
		c.unwatch()
		c.close()
		return nil, c.fail("reading answer", err)
	}
	keep := reusable(req, resp)
	if resp.Body == http.NoBody {
		t.release(c, keep)
		return resp, nil
	}
	resp.Body = &body{rc: resp.Body, t: t, c: c, keep: keep}
	return resp, nil
}

// release ends the exchange on c: c goes back to the pool if keep is true,
// the context did not end the exchange, and nothing was received past the
// answer; otherwise it is closed.
func (t *Transport) release(c *conn, keep bool) {
	if c.unwatch() && keep && c.br.Buffered() == 0 {
		t.putIdle(c)
		return
	}
	c.close()
}

// dial sets up a new connection to addr, kept in the pool under key, with
// a TLS handshake when secure is true. When ctx ends the dial, the error
// satisfies errors.Is with the context's error. A failed handshake is a
// dial error too (a *net.OpError with Op "dial"): nothing was sent.
func (t *Transport) dial(ctx context.Context, addr, key string, secure bool) (*conn, error) {
	dial := t.DialContext
	if dial == nil {
		d := &net.Dialer{Timeout: t.dialTimeout(), KeepAlive: t.keepAlive()}
		dial = d.DialContext
	}
	if d := t.dialTimeout(); d > 0 && t.DialContext == nil && secure {
		// The handshake is part of the dial, and of its bound.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		if cause := ctx.Err(); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		return nil, err
	}
	if secure {
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(nc, t.TLSConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			if cause := ctx.Err(); cause != nil && !errors.Is(err, cause) {
				err = fmt.Errorf("%w (%w)", err, cause)
			}
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: nc.RemoteAddr(), Err: fmt.Errorf("tls: %w", err)}
		}
		return newConn(key, tc), nil
	}
	return newConn(key, nc), nil
}

// dialTimeout is DialTimeout with its default applied, as net.Dialer
// takes it: zero means no bound.
func (t *Transport) dialTimeout() time.Duration {
	switch {
	case t.DialTimeout == 0:
		return defaultDialTimeout
	case t.DialTimeout < 0:
		return 0
	}
	return t.DialTimeout
}

// keepAlive is KeepAlive with its default applied, as net.Dialer takes
// it: negative turns the probes off.
func (t *Transport) keepAlive() time.Duration {
	if t.KeepAlive == 0 {
		return defaultKeepAlive
	}
	return t.KeepAlive
}

// maxIdleConnsPerHost is MaxIdleConnsPerHost with its default applied.
func (t *Transport) maxIdleConnsPerHost() int {
	if t.MaxIdleConnsPerHost == 0 {
		return defaultMaxIdleConnsPerHost
	}
	return t.MaxIdleConnsPerHost
}

// idleConnTimeout is IdleConnTimeout with its default applied; negative
// means none.
func (t *Transport) idleConnTimeout() time.Duration {
	if t.IdleConnTimeout == 0 {
		return defaultIdleConnTimeout
	}
	return t.IdleConnTimeout
}

// maxResponseHeaderBytes is MaxResponseHeaderBytes with its default
// applied.
func (t *Transport) maxResponseHeaderBytes() int64 {
	switch {
	case t.MaxResponseHeaderBytes == 0:
		return defaultMaxResponseHeaderBytes
	case t.MaxResponseHeaderBytes < 0:
		return math.MaxInt64
	}
	return t.MaxResponseHeaderBytes
}
