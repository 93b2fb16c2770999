package nano

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// ClientOptions configures a Client. The zero value of every field but
// Server is a usable default.
type ClientOptions struct {
	// Server is the host:port of the nano server that routes calls to
	// peers not yet known. Required.
	Server string
	// Servers are more nano servers, host:port each, to fall back on in
	// turn when the current one does not answer. Nil means none.
	Servers []string
	// Timeout bounds one call of Act, including a fallback to the server.
	// Zero means 30 seconds; negative means no timeout beyond the context's.
	Timeout time.Duration
	// PeerTTL is how long the instances of a pattern, learnt from the
	// server, are called directly before the client asks the server again
	// (sooner if the server's TTL is shorter). Zero means 10 seconds;
	// negative disables the peer cache, and every call goes through the
	// server. The cache holds at most MaxPeers patterns; past that, new
	// patterns go through the server until entries are due for refresh.
	PeerTTL time.Duration
	// MaxResponseBytes limits the size of an answer. Zero means 4 MiB;
	// negative means no limit.
	MaxResponseBytes int64
	// Outliers configures the ejection of cached instances that fail again
	// and again (see Outliers); its zero value is the defaults.
	Outliers Outliers
	// Observer, if not nil, is told of every call and writes what the
	// call's context carries into its header (see Observer). Nil means
	// a call made with the context a Handler received carries on the W3C
	// Trace Context of the message it handles.
	Observer Observer
	// TLS, when not nil, makes the client reach its servers over HTTPS,
	// and configures its TLS connections to servers and to the instances
	// registered as TLS: the roots that sign their certificates (RootCAs)
	// and the certificate it presents to those that require one
	// (Certificates or GetClientCertificate). Each connection takes a
	// clone, with ServerName the host it dials when none is set, and the
	// client's connections share a session cache when none is set. Nil
	// means plain HTTP to the servers, and the system's roots for
	// instances that speak TLS. It does not apply to a Transport of the
	// program's own.
	TLS *tls.Config
	// Transport carries the calls. Nil means the client's own pool of
	// kept-alive HTTP/1.1 connections, which runs each call on the
	// caller's goroutine (see the package documentation).
	Transport http.RoundTripper
	// Logger receives the client's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Client calls nanoservices by pattern with Act. For a pattern it has not
// called yet, it asks the nano server for the live instances of the
// pattern that routes it (GET /resolve), then calls those instances
// directly, in turn, until PeerTTL passes and it asks again. An instance
// that cannot be reached is dropped; when none is left, the call goes
// through the server. While no server can be asked (or the server takes
// over half a second to answer), the instances it knows are called on,
// past PeerTTL and past their registration's expiry, until they fail
// themselves, as the original library's Act did.
//
// A Client is safe for concurrent use. Services have one built in; programs
// that only call services create their own with NewClient: the zero Client
// is not usable.
type Client struct {
	opts      ClientOptions     // with defaults applied
	log       *slog.Logger      // opts.Logger
	transport http.RoundTripper // carries every call
	servers   *serverList       // Server, then Servers
	peers     routeTable        // exact pattern -> its instances (cache.go)
	resolving flight[*route]    // merges concurrent resolves of a pattern
	closed    atomic.Bool       // set by Close
	metrics   clientMetrics     // Act calls, shown by a service's GET /metrics
	outliers  outlierDetector   // ejects cached instances that fail again and again

	legacyServer atomic.Bool // the server has no /resolve
}

// Defaults of the client options.
const (
	defaultCallTimeout = 30 * time.Second
	defaultPeerTTL     = 10 * time.Second
)

// NewClient returns a client of the nano server at opts.Server.
func NewClient(opts ClientOptions) (*Client, error) {
	if err := dialAddr(opts.Server); err != nil {
		return nil, fmt.Errorf("%w: ClientOptions.Server: %v", ErrInvalidOptions, err)
	}
	for _, s := range opts.Servers {
		if err := dialAddr(s); err != nil {
			return nil, fmt.Errorf("%w: ClientOptions.Servers: %v", ErrInvalidOptions, err)
		}
	}
	if err := opts.Outliers.check("ClientOptions"); err != nil {
		return nil, err
	}
	opts.Timeout = durationOr(opts.Timeout, defaultCallTimeout)
	opts.PeerTTL = durationOr(opts.PeerTTL, defaultPeerTTL)
	if opts.MaxResponseBytes == 0 {
		opts.MaxResponseBytes = defaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{
		outliers:  outlierDetector{opts: opts.Outliers.withDefaults(), log: opts.Logger},
		opts:      opts,
		log:       opts.Logger,
		transport: orDefault(opts.Transport, defaultMaxHeaderBytes, opts.TLS),
		servers:   newServerList(append([]string{opts.Server}, opts.Servers...)),
	}, nil
}

// Act sends the JSON object msg to a service handling pattern and returns
// the bytes its handler returned. It is ActContext with a background
// context.
func (c *Client) Act(msg []byte, pattern string) ([]byte, error) {
	return c.ActContext(context.Background(), msg, pattern)
}

// ActContext sends the JSON object msg to a service handling pattern and
// returns the bytes its handler returned.
//
// pattern keys the peer cache; the message's own "Pattern" field is what
// the server and the service route by, so they are normally the same. The
// handler receives msg's bytes unchanged, with one exception: a call that
// goes through a server without /resolve (the original library's) adds
// "ServiceRequest": true to the message when it is not there, as that is
// the only way such a server's answer names the service to call directly
// next time. An answer in the original's JSON envelope is unwrapped, as
// the original's Act did.
//
// A peer that cannot be reached, or no longer handles the pattern, is
// dropped and the next one is tried; when none is left the call goes
// through the server. A call that may have reached a handler (any other
// failure) is not sent again. ctx bounds the whole call: when it ends,
// the error unwraps to context.DeadlineExceeded or context.Canceled.
// Errors from the server or the service are *Error values: errors.Is(err,
// ErrNoService) tells that nothing handles the pattern.
func (c *Client) ActContext(ctx context.Context, msg []byte, pattern string) (answer []byte, err error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	p, err := parsePattern(pattern)
	if err != nil {
		return nil, err
	}
	if err := checkObject(msg); err != nil {
		return nil, err
	}
	body := msg
	own := false // the call's deadline is the client's Timeout, not the caller's
	if c.opts.Timeout > 0 {
		deadline, bounded := ctx.Deadline()
		own = !bounded || time.Now().Add(c.opts.Timeout).Before(deadline)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	ctx, end := observe(ctx, c.opts.Observer, OpAct, p, nil)
	defer func() {
		c.metrics.countAct(p, err)
		end(answerStatus(err), err)
	}()

	if c.opts.PeerTTL > 0 {
		rt, err := c.peersOf(ctx, p)
		if err != nil {
			return nil, err
		}
		if rt != nil {
			if payload, err, done := c.callPeers(ctx, p, rt, body, own); done {
				return payload, err
			}
		}
	}
	env, err := c.viaServer(ctx, body)
	if err != nil && c.opts.PeerTTL > 0 && c.legacyServer.Load() && failoverFromServer(err) {
		// No server without /resolve can be reached: call the instances
		// learnt from earlier answers, as the original's Act did.
		if stale, ok := c.peers.get(p); ok {
			if payload, err, done := c.callPeers(ctx, p, c.keepStale(stale), body, own); done {
				return payload, err
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if c.legacyServer.Load() && env.Service != nil {
		c.learn(p, *env.Service)
	}
	return env.Payload, nil
}

// viaServer sends the message through the current server, and on to the
// next while a server cannot be reached: it has not had the message. A
// server without /resolve gets it asking for the JSON envelope.
func (c *Client) viaServer(ctx context.Context, body []byte) (env envelope, err error) {
	for range c.servers.len() {
		addr := c.servers.current()
		legacy := c.legacyServer.Load()
		msg := body
		if legacy {
			msg = withServiceRequest(body)
		}
		env, err = c.post(ctx, addr, c.opts.TLS != nil, legacy, msg)
		if !failoverFromServer(err) {
			return env, err
		}
		c.servers.failed(addr)
	}
	return env, err
}

// serverURL is the URL of path at the server at addr.
func (c *Client) serverURL(addr, path string) string {
	if c.opts.TLS != nil {
		return "https://" + addr + path
	}
	return "http://" + addr + path
}

// failoverFromServer reports whether a call to a server failed without
// reaching it.
func failoverFromServer(err error) bool {
	_, ok := errors.AsType[*notHandledError](err)
	return ok && !errors.Is(err, ErrNoService)
}

// answerStatus is the status of the answer that ended a call with err: 200
// when there was no error, the status of an *Error, 0 when no answer came.
func answerStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.status()
	}
	return 0
}

// Close closes the client's idle connections. Later calls return
// ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	closeIdle(c.transport)
	return nil
}

// callPeers sends the message to an instance of rt: the less busy of two
// live ones taken at random (balance.go). An instance that cannot be
// reached counts against it (outlier detection) and the next one is
// tried; one that no longer handles the pattern leaves the cache. done is
// false when none answered, and the call should go through the server.
// own says that ctx's deadline
// is the client's Timeout: an instance that misses it is to blame.
func (c *Client) callPeers(ctx context.Context, p string, rt *route, body []byte, own bool) (payload []byte, err error, done bool) {
	now := time.Now().UnixNano()
	pk := picker{r: rt, expiry: now, now: now}
	for {
		i, st, ok := pk.next()
		if !ok {
			return nil, nil, false
		}
		addr := rt.instances[i].addr
		st.inFlight.Add(1)
		hostPort, secure := splitTarget(addr)
		env, err := c.post(ctx, hostPort, secure, false, body)
		st.inFlight.Add(-1)
		switch {
		case err == nil:
			c.outliers.succeeded(rt, addr, st)
			return env.Payload, nil, true
		case failover(err) && !dialFailed(err): // no handler for p
			if c.peers.remove(p, addr, time.Time{}) {
				c.log.Debug("nano: dropped cached peer", "pattern", p, "address", addr, "error", err)
			}
		case ctx.Err() == nil && failover(err):
			c.outliers.failed(rt, addr, st, time.Now().UnixNano(), true, err)
		case ctx.Err() == nil || own && ctx.Err() == context.DeadlineExceeded:
			if gatewayFailure(err) {
				c.outliers.failed(rt, addr, st, time.Now().UnixNano(), false, err)
			} else {
				c.outliers.succeeded(rt, addr, st)
			}
		}
		if !failover(err) || ctx.Err() != nil {
			return nil, err, true
		}
	}
}

// gatewayFailure reports whether a call's err is the failure of the
// instance itself: no answer, or a 502, 503 or 504 that no handler chose.
func gatewayFailure(err error) bool {
	e, ok := errors.AsType[*Error](err)
	if !ok {
		return true
	}
	return !errors.Is(err, ErrHandler) && (e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable || e.Status == http.StatusGatewayTimeout)
}

// post sends body to addr, over HTTPS when secure, and decodes the
// answer; the envelope's Service is set only when the answer was the
// original's JSON envelope. legacy says that addr is a server without
// /resolve, which would not pass the Nano-Envelope field on.
func (c *Client) post(ctx context.Context, addr string, secure, legacy bool, body []byte) (envelope, error) {
	var env envelope
	header, ok := c.header(ctx, legacy)
	if !ok {
		return env, callError(ctx, context.DeadlineExceeded)
	}
	resp, err := c.transport.RoundTrip(outbound(ctx, addr, secure, header, body))
	if err != nil {
		return env, callError(ctx, err)
	}
	defer resp.Body.Close()
	if err := checkAnswer(resp); err != nil {
		return env, err
	}
	data, err := readAnswer(resp.Body, c.opts.MaxResponseBytes)
	if errors.Is(err, ErrServiceUnavailable) { // over the limit
		return env, err
	}
	if err != nil {
		return env, callError(ctx, err)
	}
	return decodeAnswer(resp.StatusCode, resp.Header, data)
}

// header returns the header of a call made within ctx: JSON, the envelope
// in the answer's header unless legacy, the time left to ctx, and what
// the Observer (or the trace context of the handler's call that ctx
// belongs to) carries. It reports false when ctx has no time left.
func (c *Client) header(ctx context.Context, legacy bool) (http.Header, bool) {
	h := make(http.Header, 5)
	h["Content-Type"] = jsonContentType
	if !legacy {
		h[envelopeHeader] = envelopeInHeaderValue
	}
	if !setBudget(ctx, h) {
		return nil, false
	}
	inject(ctx, c.opts.Observer, h)
	return h, true
}

// readAnswer reads an answer's body of at most limit bytes (no limit if
// negative).
func readAnswer(body io.Reader, limit int64) ([]byte, error) {
	if limit < 0 {
		return io.ReadAll(body)
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%w: answer over %d bytes", ErrServiceUnavailable, limit)
	}
	return data, err
}
