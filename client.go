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
	// PeerTTL is how long a peer learnt from a server's answer is called
	// directly before the client asks the server again. Zero means one
	// minute; negative disables the peer cache (every call goes through the
	// server). The cache holds at most MaxPeers patterns; past that, new
	// patterns go through the server until entries expire.
	PeerTTL time.Duration
	// MaxResponseBytes limits the size of an answer. Zero means 4 MiB.
	MaxResponseBytes int64
	// Transport carries the calls. Nil means a transport owned by the
	// client, with keep-alive pools sized for many concurrent calls.
	Transport http.RoundTripper
	// Logger receives the client's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// MaxPeers is the largest number of patterns a Client caches peers for.
const MaxPeers = 10_000

// Client calls nanoservices by pattern with Act. The first call for a
// pattern goes through the nano server; the answer names the service that
// handled it, and later calls for that pattern go straight to that service
// until PeerTTL passes or the service stops answering, when the client
// falls back to the server again.
//
// A Client is safe for concurrent use. Services have one built in; programs
// that only call services create their own with NewClient: the zero Client
// is not usable.
type Client struct {
	opts      ClientOptions     // with defaults applied
	log       *slog.Logger      // opts.Logger
	transport http.RoundTripper // opts.Transport, shared by every call
	serverURL string            // "http://" + opts.Server + "/"
	peers     mirror[*peer]     // pattern -> the peer the server chose for it
	closed    atomic.Bool       // set by Close
}

// peer is a service a Client calls directly.
type peer struct {
	reg     Registration
	url     string
	expires time.Time
}

// envelope is a service's answer to a message with "ServiceRequest": true.
// encoding/json writes Payload as base64, as the original library did.
type envelope struct {
	Service Registration `json:"Service"`
	Payload []byte       `json:"Payload"`
}

// Defaults of the options.
const (
	defaultCallTimeout  = 30 * time.Second
	defaultPeerTTL      = time.Minute
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
	if opts.Transport == nil {
		opts.Transport = newTransport()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{
		opts:      opts,
		log:       opts.Logger,
		transport: opts.Transport,
		serverURL: "http://" + opts.Server + "/",
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
// to the message when it is not there) to learn which service answered,
// and later calls with the same pattern go to that service directly.
//
// A peer that refuses the connection, or no longer handles the pattern, is
// dropped and the call goes through the server instead. A call that may
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
	if c.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}

	if pr, ok := c.peers.get(p); ok && time.Now().Before(pr.expires) {
		env, err := c.post(ctx, pr.url, body)
		if err == nil {
			return env.Payload, nil
		}
		if !notHandled(err) {
			return nil, err
		}
		c.forget(p, pr, err)
	}
	env, err := c.post(ctx, c.serverURL, body)
	if err != nil {
		return nil, err
	}
	c.learn(p, env.Service)
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
	return nil
}

// learn caches the service that the server chose for pattern p. The
// entry serves that exact pattern only: the server may route a longer
// pattern to a more specific service the client has not seen.
func (c *Client) learn(p string, reg Registration) {
	if c.opts.PeerTTL < 0 {
		return
	}
	reg, err := reg.normalize()
	if err != nil {
		return // an answer without a usable Service: nothing to cache
	}
	if c.peers.len() >= MaxPeers && !c.prune() {
		return
	}
	c.peers.insert(p, &peer{
		reg:     reg,
		url:     "http://" + reg.ServiceAddress + "/",
		expires: time.Now().Add(c.opts.PeerTTL),
	})
}

// prune drops the expired peers and reports whether there is room for
// another.
func (c *Client) prune() bool {
	now := time.Now()
	c.peers.each(func(p string, pr *peer) {
		if now.After(pr.expires) {
			c.peers.deleteIf(p, func(cur *peer) bool { return cur != pr })
		}
	})
	return c.peers.len() < MaxPeers
}

// forget drops a peer that failed, unless another call replaced it already.
func (c *Client) forget(pattern string, pr *peer, cause error) {
	if c.peers.deleteIf(pattern, func(cur *peer) bool { return cur != pr }) {
		c.log.Debug("nano: dropped cached peer", "pattern", pattern, "address", pr.reg.ServiceAddress, "error", cause)
	}
}

// post sends body to url and decodes the envelope of the answer.
func (c *Client) post(ctx context.Context, url string, body []byte) (envelope, error) {
	var env envelope
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return env, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.transport.RoundTrip(req)
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
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		err := errorFromResponse(resp.StatusCode, data)
		if resp.Header.Get(noHandlerHeader) != "" {
			return env, &notHandledError{err}
		}
		return env, err
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return env, &notHandledError{fmt.Errorf("%w: answer is not a service envelope: %v", ErrServiceUnavailable, err)}
	}
	return env, nil
}

// noHandlerHeader marks a service's 404 for a message none of its
// handlers matches, as opposed to a 404 a handler chose.
const noHandlerHeader = "Nano-Error"

// notHandledError wraps the failure of a call that reached no handler: the
// connection was refused, the peer no longer handles the pattern, or it is
// not a nano service. Only such a call may be sent again elsewhere.
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
	return fmt.Errorf("%w: %v", ErrServiceUnavailable, err)
}

// withServiceRequest checks that msg is a JSON object and returns it with
// "ServiceRequest": true, adding the field before the closing brace when the
// message does not already ask for the envelope.
func withServiceRequest(msg []byte) ([]byte, error) {
	var probe struct {
		ServiceRequest json.RawMessage
	}
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidMessage)
	}
	if err := json.Unmarshal(trimmed, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	if string(probe.ServiceRequest) == "true" {
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
