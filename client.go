package nano

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"
)

// ClientOptions configures a Client. The zero value of every field but
// Server is a usable default.
type ClientOptions struct {
	// Server is the host:port of the nano server that routes calls to
	// peers not yet known. Required.
	Server string
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
	// MaxResponseBytes limits the size of an answer. Zero means 4 MiB.
	MaxResponseBytes int64
	// Transport carries the calls. Nil means the client's own pool of
	// kept-alive HTTP/1.1 connections for messages (run on the caller's
	// goroutine) and a tuned http.Transport for the calls to /resolve.
	Transport http.RoundTripper
	// Logger receives the client's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// MaxPeers is the largest number of patterns a Client caches peers for.
const MaxPeers = 10_000

// Client calls nanoservices by pattern with Act. For a pattern it has not
// called yet, it asks the nano server for the live instances of the
// pattern that routes it (GET /resolve), then calls those instances
// directly, in turn, until PeerTTL passes and it asks again. An instance
// that refuses the connection is dropped; when none is left, the call goes
// through the server.
//
// A Client is safe for concurrent use. Services have one built in; programs
// that only call services create their own with NewClient: the zero Client
// is not usable.
type Client struct {
	opts       ClientOptions     // with defaults applied
	log        *slog.Logger      // opts.Logger
	transport  http.RoundTripper // carries the calls to /resolve
	sender     sender            // carries the messages
	resolveURL string            // the server's /resolve?pattern=
	peers      routeTable        // exact pattern -> its instances
	resolving  flight[*route]    // merges concurrent resolves of a pattern
	closed     atomic.Bool       // set by Close

	legacyServer atomic.Bool // the server has no /resolve
}

// envelope is a service's answer to a message with "ServiceRequest": true.
// encoding/json writes Payload as base64, as the original library did.
type envelope struct {
	Service *Registration `json:"Service"` // nil in an answer that is not an envelope
	Payload []byte        `json:"Payload"`
}

// Defaults of the options.
const (
	defaultCallTimeout  = 30 * time.Second
	defaultPeerTTL      = 10 * time.Second
	defaultMaxBodyBytes = 4 << 20
)

// NewClient returns a client of the nano server at opts.Server.
func NewClient(opts ClientOptions) (*Client, error) {
	if err := dialAddr(opts.Server); err != nil {
		return nil, fmt.Errorf("%w: ClientOptions.Server: %v", ErrInvalidOptions, err)
	}
	opts.Timeout = durationOr(opts.Timeout, defaultCallTimeout)
	if opts.PeerTTL == 0 {
		opts.PeerTTL = defaultPeerTTL
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = defaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{
		opts:       opts,
		log:        opts.Logger,
		transport:  orDefault(opts.Transport),
		sender:     newSender(opts.Transport),
		resolveURL: "http://" + opts.Server + "/resolve?pattern=",
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
// call asks for the ServiceRequest envelope (adding "ServiceRequest": true
// to the message when it is not there), which tells a service's answer
// apart from anything else listening at its address, and names the service
// that answered through a server without /resolve.
//
// A peer that refuses the connection, or no longer handles the pattern, is
// dropped and the next one is tried; when none is left the call goes
// through the server. A call that may
// have reached a handler (a timeout, a handler error) is not retried.
// Errors from the server or the service are *Error values: errors.Is(err,
// ErrNoService) tells that nothing handles the pattern.
func (c *Client) ActContext(ctx context.Context, msg []byte, pattern string) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	p, err := parsePattern(pattern)
	if err != nil {
		return nil, err
	}
	body, err := withServiceRequest(msg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, c.opts.Timeout, c.sender)
	defer cancel()

	if c.opts.PeerTTL > 0 {
		rt, err := c.peersOf(ctx, p)
		if errors.Is(err, ErrNoService) {
			return nil, err
		}
		if rt != nil {
			if payload, err, done := c.callPeers(ctx, p, rt, body); done {
				return payload, err
			}
		}
	}
	header := callHeader
	if c.legacyServer.Load() {
		header = legacyHeader
	}
	env, err := c.post(ctx, c.opts.Server, header, body)
	if err != nil {
		return nil, err
	}
	if c.legacyServer.Load() && env.Service != nil {
		c.learn(p, *env.Service)
	}
	return env.Payload, nil
}

// Close closes the client's idle connections. Later calls return
// ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if ci, ok := c.transport.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
	closeIdle(c.sender)
	return nil
}

// peersOf returns the instances to call for pattern p: from the cache
// while fresh, else from the server's /resolve (one request for all
// concurrent callers). When the server cannot be asked, a stale entry
// still serves: its instances are only tried. It returns nil, and no error
// but ErrNoService, when the call should go through the server.
func (c *Client) peersOf(ctx context.Context, p string) (*route, error) {
	cached, ok := c.peers.get(p)
	if ok && time.Now().UnixNano() < cached.refresh {
		return cached, nil
	}
	if c.legacyServer.Load() {
		return nil, nil // stale: the next answer through the server renews it
	}
	rt, err := c.resolving.do(p, func() (*route, error) { return c.resolve(ctx, p) })
	switch {
	case err == nil:
		return rt, nil
	case errors.Is(err, ErrNoService):
		c.peers.drop(p, nil)
		return nil, err
	default:
		c.log.Debug("nano: cannot resolve", "pattern", p, "error", err)
		return cached, nil
	}
}

// resolve asks the server for the live instances of the pattern that
// routes p, and caches them under p until PeerTTL passes (or the TTL the
// server announced, if shorter). A server without /resolve (the original
// library's answers 405) is not asked again; the client then learns one
// instance from each answer that comes through the server.
func (c *Client) resolve(ctx context.Context, p string) (*route, error) {
	if deadline, ok := ctx.Deadline(); ok { // enforced here by a timer
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.resolveURL+url.QueryEscape(p), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.transport.RoundTrip(req)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes))
	if err != nil {
		return nil, transportError(ctx, err)
	}
	if resp.StatusCode == http.StatusMethodNotAllowed {
		c.legacyServer.Store(true)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(resp.StatusCode, data)
	}
	var res resolution
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("%w: bad /resolve answer: %v", ErrServiceUnavailable, err)
	}
	ttl := c.opts.PeerTTL
	if server := time.Duration(res.TTL * float64(time.Second)); server > 0 {
		ttl = min(ttl, server)
	}
	rt := &route{pattern: p, refresh: time.Now().Add(ttl).UnixNano()}
	for _, in := range res.Instances {
		if dialAddr(in.ServiceAddress) == nil {
			rt.instances = append(rt.instances, newInstance(in.ServiceAddress, in.Expires))
		}
	}
	if len(rt.instances) == 0 {
		return nil, fmt.Errorf("%w %q", ErrNoService, p)
	}
	c.remember(rt)
	return rt, nil
}

// callPeers sends the message to the instances of rt in round-robin
// order. An instance that refuses the connection or no longer handles the
// pattern is dropped and the next one tried; done is false when none
// answered, and the call should go through the server.
func (c *Client) callPeers(ctx context.Context, p string, rt *route, body []byte) (payload []byte, err error, done bool) {
	n, first := len(rt.instances), rt.start()
	for i := range n {
		in := rt.instances[(first+i)%n]
		env, err := c.post(ctx, in.addr, callHeader, body)
		if err == nil {
			return env.Payload, nil, true
		}
		if !notHandled(err) {
			return nil, err, true
		}
		if c.peers.remove(p, in.addr, time.Time{}) {
			c.log.Debug("nano: dropped cached peer", "pattern", p, "address", in.addr, "error", err)
		}
	}
	return nil, nil, false
}

// learn caches the service that answered a call through a server without
// /resolve. The entry serves that exact pattern only: the server may route
// a longer pattern to a more specific service.
func (c *Client) learn(p string, reg Registration) {
	if c.opts.PeerTTL <= 0 {
		return
	}
	reg, err := reg.normalize()
	if err != nil {
		return // an answer without a usable Service: nothing to cache
	}
	now := time.Now()
	c.remember(&route{
		pattern:   p,
		instances: []instance{newInstance(reg.ServiceAddress, now.Add(c.opts.PeerTTL))},
		refresh:   now.Add(c.opts.PeerTTL).UnixNano(),
	})
}

// remember caches rt, unless the cache is full of fresh entries.
func (c *Client) remember(rt *route) {
	if c.peers.len() >= MaxPeers && !c.prune() {
		return
	}
	c.peers.set(rt)
}

// prune drops the entries due for refresh and reports whether there is
// room for another.
func (c *Client) prune() bool {
	now := time.Now().UnixNano()
	c.peers.each(func(rt *route) {
		if now > rt.refresh {
			c.peers.drop(rt.pattern, rt)
		}
	})
	return c.peers.len() < MaxPeers
}

// orDefault returns rt, or a new tuned transport if rt is nil.
func orDefault(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return newTransport()
	}
	return rt
}

// callHeader is the header of the messages a Client sends: JSON, and the
// envelope in the answer's header if the service can.
var callHeader = http.Header{"Content-Type": jsonContentType, envelopeHeader: {envelopeInHeader}}

// legacyHeader is the header of the messages sent through a server without
// /resolve: the client learns peers from the JSON envelope's Service.
var legacyHeader = http.Header{"Content-Type": jsonContentType}

// A service of this library answers a message that asks for the
// ServiceRequest envelope, and whose request carries "Nano-Envelope:
// header", with the handler's bytes as the body and the pattern that
// matched in a "Nano-Service" header: the same facts as the JSON envelope
// without encoding the payload in base64 and decoding it again. Services
// that do not know the header (the original library's) answer with the
// JSON envelope, which the client reads as before.
const (
	envelopeHeader   = "Nano-Envelope"
	envelopeInHeader = "header"
	serviceHeader    = "Nano-Service"
)

// post sends body to http://addr/ and decodes the envelope of the answer;
// the envelope's Service is nil when the answer carried it in its header.
func (c *Client) post(ctx context.Context, addr string, header http.Header, body []byte) (envelope, error) {
	var env envelope
	resp, err := c.sender.send(ctx, addr, header, body)
	if err != nil {
		return env, transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes+1))
	if err != nil {
		return env, transportError(ctx, err)
	}
	if int64(len(data)) > c.opts.MaxResponseBytes {
		return env, fmt.Errorf("%w: answer over %d bytes", ErrServiceUnavailable, c.opts.MaxResponseBytes)
	}
	return decodeAnswer(resp.StatusCode, resp.Header, data)
}

// decodeAnswer reads a service's answer to a call: the handler's bytes,
// from the JSON envelope or as the body when the header says the envelope
// is there; an error answer becomes an *Error.
func decodeAnswer(status int, header http.Header, data []byte) (envelope, error) {
	var env envelope
	if status < 200 || status > 299 {
		err := errorFromResponse(status, data)
		if header.Get(noHandlerHeader) != "" {
			return env, &notHandledError{err}
		}
		return env, err
	}
	if len(header[serviceHeader]) > 0 {
		env.Payload = data
		return env, nil
	}
	if err := json.Unmarshal(data, &env); err != nil || env.Service == nil {
		return envelope{}, &notHandledError{fmt.Errorf("%w: the answer is not a service envelope", ErrServiceUnavailable)}
	}
	return env, nil
}

// noHandlerHeader marks a service's 404 for a message none of its
// handlers matches, as opposed to a 404 a handler chose.
const noHandlerHeader = "Nano-Error"

// notHandledError wraps the failure of a call that reached no handler: the
// connection was refused or reset before the request was read, the peer
// no longer handles the pattern, or it is not a nano service. Only such a
// call may be sent again elsewhere.
type notHandledError struct{ err error }

func (e *notHandledError) Error() string { return e.err.Error() }
func (e *notHandledError) Unwrap() error { return e.err }

// notHandled reports whether a call failed before any handler could run.
func notHandled(err error) bool {
	_, ok := errors.AsType[*notHandledError](err)
	return ok
}

// transportError classifies the failure of a round trip.
func transportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return ctxErr
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return &notHandledError{fmt.Errorf("%w: %w", ErrServiceUnavailable, err)}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) { // the connection's deadline, set from ctx's
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	// A reset before any answer means the peer's process never read the
	// request: it had exited (a kept-alive connection to a killed
	// instance), or the request was still unread in its socket when it
	// did. A process that read the request and then died closes with a
	// FIN, and that call may have reached a handler: it is not retried.
	if _, ok := errors.AsType[*resetError](err); ok {
		return &notHandledError{fmt.Errorf("%w: %w", ErrServiceUnavailable, err)}
	}
	return fmt.Errorf("%w: %v", ErrServiceUnavailable, err)
}

// withServiceRequest checks that msg is a JSON object and returns it with
// "ServiceRequest": true, adding the field before the closing brace when the
// message does not already ask for the envelope.
func withServiceRequest(msg []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidMessage)
	}
	m, err := readMessage(trimmed)
	if err != nil {
		return nil, err
	}
	if m.ServiceRequest {
		return msg, nil
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
	return out, nil
}
