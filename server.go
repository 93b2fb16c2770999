package nano

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis/v8"
)

// ServerOptions configures a Server. The zero value is a server on port
// 9999 with an embedded in-memory registry and the defaults below.
type ServerOptions struct {
	// Addr is the TCP address ListenAndServe listens on. Empty means ":9999".
	Addr string
	// Redis selects the shared registry: a standalone server, Sentinel
	// (MasterName set) or Cluster (several Addrs), as go-redis's
	// NewUniversalClient reads them. Nil means an embedded in-memory
	// registry that only this server sees.
	Redis *redis.UniversalOptions
	// KeyPrefix namespaces the Redis keys of the registry. Empty means "nano:".
	KeyPrefix string
	// Token, when not empty, must be sent as "Authorization: Bearer <Token>"
	// with every registration and deregistration, and to read GET
	// /services. Empty means they are not authenticated: run the server on
	// a trusted network only.
	Token string
	// MaxBodyBytes limits the size of a request body; larger bodies are
	// answered with 413. Zero means 4 MiB.
	MaxBodyBytes int64
	// MaxPatterns bounds the patterns this server accepts registrations
	// for: once its mirror holds that many, a registration of a pattern it
	// does not hold yet is answered with 507 (services retry it later).
	// Renewals of patterns it holds pass, and the patterns other servers
	// register still reach its mirror; a pattern whose instances all
	// expired or failed is no longer held. Zero means 100 000 (some 28 MB
	// of mirror); negative means no limit.
	MaxPatterns int
	// ReadHeaderTimeout bounds the reading of a request's headers. Zero
	// means 5 seconds; negative means no limit.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a request's body, once its headers
	// are read. Zero means 30 seconds; negative means no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request headers to
	// the end of the answer, which includes the upstream call. Zero means
	// UpstreamTimeout plus 10 seconds; negative means no limit.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next
	// request. Zero means 2 minutes; negative means no limit.
	IdleTimeout time.Duration
	// UpstreamTimeout bounds one proxied call to a service, from dial to
	// the end of its answer; a service that takes longer is answered with
	// 504. Zero means 30 seconds; negative means no limit.
	UpstreamTimeout time.Duration
	// RegistryTimeout bounds each call to Redis. Zero or negative means 3
	// seconds: a registry call always has a limit.
	RegistryTimeout time.Duration
	// TTL is how long a registration lives unless the service renews it.
	// Services renew at a third of it, which the server tells them in its
	// answer to /register. Zero or negative means 30 seconds. Servers
	// sharing a Redis should use the same TTL.
	TTL time.Duration
	// ResyncInterval is how often the server reloads the whole registry
	// into its mirror, repairing changes it missed (it hears of changes at
	// once through Redis pub/sub). Zero or negative means 10 seconds; it
	// does not apply to the embedded registry.
	ResyncInterval time.Duration
	// Transport carries the proxied calls. Nil means the server's own pool
	// of kept-alive HTTP/1.1 connections (up to 256 idle per service
	// instance, closed after 90 s unused), which runs each call on the
	// request's goroutine; it is cheaper than an http.Transport.
	Transport http.RoundTripper
	// Logger receives the server's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Server routes JSON messages to the services whose registered pattern is
// the longest whole-field prefix of the message's "Pattern".
//
// It answers the control endpoints (/register, /deregister, /resolve,
// /healthz, /readyz, /metrics, /services) and proxies POST requests on
// every other path. Registrations live in the registry
// (Redis, or the embedded one) and are mirrored in memory, so routing a
// known pattern needs no Redis round trip.
//
// A Server is safe for concurrent use. Create one with NewServer or
// NewServerWithOptions: the zero Server is not usable.
type Server struct {
	opts      ServerOptions  // with defaults applied
	log       *slog.Logger   // opts.Logger
	reg       registry       // the source of truth
	routes    routeTable     // mirror of reg, answers the hot path
	misses    flight[*route] // merges concurrent registry lookups
	sender    sender         // carries every proxied call
	handler   http.Handler   // serveHTTP
	ready     atomic.Bool    // the registry answered when last asked
	readyMu   sync.Mutex     // serializes the changes of ready
	resyncNow chan struct{}  // asks the maintenance loop for a resync
	stop      chan struct{}  // closed by Shutdown: ends the loops
	loops     sync.WaitGroup // maintenance and subscription loops

	metrics metrics // what GET /metrics shows

	inbound   inbound   // serves the connections given to Serve
	closeOnce sync.Once // runs Shutdown
	closeErr  error     // set by the first Shutdown
}

// Defaults of the server options.
const (
	defaultServerAddr        = ":9999"
	defaultKeyPrefix         = "nano:"
	defaultMaxPatterns       = 100_000
	defaultReadHeaderTimeout = 5 * time.Second
	defaultReadTimeout       = 30 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
	defaultUpstreamTimeout   = 30 * time.Second
	defaultRegistryTimeout   = 3 * time.Second
	defaultTTL               = 30 * time.Second
	defaultResyncInterval    = 10 * time.Second
)

// NewServer returns a server listening on listenPort with its registry in
// the Redis at redisAddress, as the original library did. An empty
// redisAddress selects the embedded in-memory registry. The environment
// variable NANO_TOKEN, when set, becomes ServerOptions.Token.
//
// If Redis cannot be reached, NewServer logs the error and exits the
// process with status 1; use NewServerWithOptions to handle the error.
func NewServer(redisAddress, redisPassword string, redisDB, listenPort int) *Server {
	opts := ServerOptions{
		Addr:  ":" + strconv.Itoa(listenPort),
		Token: os.Getenv("NANO_TOKEN"),
	}
	if redisAddress != "" {
		opts.Redis = &redis.UniversalOptions{
			Addrs:    []string{redisAddress},
			Password: redisPassword,
			DB:       redisDB,
		}
	}
	s, err := NewServerWithOptions(opts)
	if err != nil {
		fatal(slog.Default(), "nano: cannot start server", err)
	}
	return s
}

// NewServerWithOptions returns a server configured by opts. It connects to
// Redis, when opts.Redis is set, and loads the whole registry into the
// server's mirror; it fails with ErrRegistryUnavailable if Redis does not
// answer within RegistryTimeout. The server keeps its mirror in step with
// the registry in the background until Shutdown.
func NewServerWithOptions(opts ServerOptions) (*Server, error) {
	opts = opts.withDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		sender:    newSender(opts.Transport),
		resyncNow: make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.inbound = inbound{
		handler:    s.handler,
		log:        opts.Logger,
		readHeader: opts.ReadHeaderTimeout,
		read:       opts.ReadTimeout,
		write:      opts.WriteTimeout,
		idleTime:   opts.IdleTimeout,
	}
	s.ready.Store(true)
	if opts.Redis == nil {
		s.reg = &memRegistry{}
		s.loops.Go(s.maintain)
		return s, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.RegistryTimeout)
	defer cancel()
	r, err := newRedisRegistry(ctx, opts.Redis, opts.KeyPrefix)
	if err != nil {
		return nil, err
	}
	s.reg = r
	if err := s.resync(ctx); err != nil {
		r.close()
		return nil, err
	}
	s.loops.Go(s.maintain)
	s.loops.Go(func() { r.subscribe(s.stop, s.apply, s.requestResync) })
	return s, nil
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Addr == "" {
		o.Addr = defaultServerAddr
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultKeyPrefix
	}
	if o.MaxPatterns == 0 {
		o.MaxPatterns = defaultMaxPatterns
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	o.ReadHeaderTimeout = durationOr(o.ReadHeaderTimeout, defaultReadHeaderTimeout)
	o.ReadTimeout = durationOr(o.ReadTimeout, defaultReadTimeout)
	o.IdleTimeout = durationOr(o.IdleTimeout, defaultIdleTimeout)
	o.UpstreamTimeout = durationOr(o.UpstreamTimeout, defaultUpstreamTimeout)
	if o.WriteTimeout == 0 && o.UpstreamTimeout > 0 {
		o.WriteTimeout = o.UpstreamTimeout + 10*time.Second
	}
	o.WriteTimeout = durationOr(o.WriteTimeout, 0)
	if o.RegistryTimeout <= 0 {
		o.RegistryTimeout = defaultRegistryTimeout
	}
	if o.TTL <= 0 {
		o.TTL = defaultTTL
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = defaultResyncInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Listen serves on the port given to NewServer and blocks. It returns when
// the server is shut down; on any other failure (the port is taken, say) it
// logs the error and exits the process with status 1.
func (s *Server) Listen() {
	if err := s.ListenAndServe(); err != nil && !errors.Is(err, ErrClosed) {
		fatal(s.log, "nano: server failed", err)
	}
}

// ListenAndServe listens on opts.Addr and serves until Shutdown, when it
// returns ErrClosed.
func (s *Server) ListenAndServe() error {
	l, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("nano: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l and serves them until Shutdown, when it
// returns ErrClosed. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	s.log.Info("nano: server listening", "addr", l.Addr().String(), "registry", s.registryName())
	return s.inbound.serve(l)
}

// Handler returns the server's HTTP handler, for use with an http.Server
// of your own or in tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Shutdown stops the server gracefully: it stops accepting connections,
// waits for the requests in flight to finish or ctx to end, stops keeping
// the mirror in step and closes the registry connection. It is idempotent;
// later calls to Serve return ErrClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.inbound.shutdown(ctx)
		close(s.stop)
		s.loops.Wait()
		closeIdle(s.sender)
		s.closeErr = errors.Join(err, s.reg.close())
	})
	return s.closeErr
}

func (s *Server) registryName() string {
	if s.opts.Redis == nil {
		return "embedded"
	}
	return "redis " + strings.Join(s.opts.Redis.Addrs, ",")
}

// serveHTTP dispatches by path: the control endpoints of control.go, or a
// message to proxy.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/register":
		s.register(w, r)
	case "/deregister":
		s.deregister(w, r)
	case "/resolve":
		s.resolveEndpoint(w, r)
	case "/healthz":
		s.healthz(w, r)
	case "/readyz":
		s.readyz(w, r)
	case "/metrics":
		s.metricsEndpoint(w, r)
	case "/services":
		s.servicesEndpoint(w, r)
	default:
		s.proxy(w, r)
	}
}

// proxy handles every path but the control endpoints: it routes the
// message by its Pattern and passes the service's answer back.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		s.refuse(w, ErrMethodNotAllowed)
		return
	}
	if err := checkConnection(r.Header); err != nil {
		s.refuse(w, err)
		return
	}
	body, err := readBody(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		s.refuse(w, err)
		return
	}
	p, err := messagePattern(body)
	if err != nil {
		s.refuse(w, err)
		return
	}
	rt, err := s.resolve(r.Context(), p)
	if err != nil {
		s.refuse(w, err)
		return
	}
	s.forward(w, r, rt, body)
}

// refuse answers a message that no pattern routed, and counts it.
func (s *Server) refuse(w http.ResponseWriter, err error) {
	s.metrics.count("", statusOf(err))
	writeError(w, err)
}

// answerError answers a message routed by pattern with err, and counts it.
func (s *Server) answerError(w http.ResponseWriter, pattern string, err error) {
	s.metrics.count(pattern, statusOf(err))
	writeError(w, err)
}

// resolve finds the route of a canonical pattern: from the mirror, or on
// a miss from the registry in one round trip shared by concurrent misses.
// A mirrored route whose instances all expired counts as a miss.
func (s *Server) resolve(ctx context.Context, p string) (*route, error) {
	if rt, ok := s.routes.lookup(p); ok && rt.live(s.now()) {
		return rt, nil
	}
	return s.misses.do(p, func() (*route, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.RegistryTimeout)
		defer cancel()
		pattern, members, err := s.reg.lookup(ctx, p)
		if err != nil {
			s.setReady(false, err)
			return nil, err
		}
		if pattern == "" {
			return nil, fmt.Errorf("%w %q", ErrNoService, p)
		}
		s.routes.merge(pattern, members...)
		rt, ok := s.routes.get(pattern)
		if !ok { // deregistered meanwhile
			return nil, fmt.Errorf("%w %q", ErrNoService, p)
		}
		return rt, nil
	})
}

// forward sends the message to an instance of rt and copies its answer.
// Instances are tried in round-robin order; an instance that refuses the
// connection, or answers that none of its handlers matches, is dropped from
// the mirror and the next one is tried. A call that may have reached a
// handler is never sent again.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, rt *route, body []byte) {
	ctx, cancel := withTimeout(r.Context(), s.opts.UpstreamTimeout, s.sender)
	defer cancel()
	now := s.now()
	live := rt.liveCount(now)
	if live == 0 { // all expired since resolve looked
		s.answerError(w, rt.pattern, fmt.Errorf("%w %q", ErrNoService, rt.pattern))
		return
	}
	n, first := len(rt.instances), rt.start()
	for i := range n {
		in := rt.instances[(first+i)%n]
		if !in.liveAt(now) {
			continue
		}
		live--
		sent := time.Now()
		resp, err := s.send(ctx, in, r.Header, body)
		if err == nil {
			s.metrics.upstream.observe(time.Since(sent))
		}
		if err == nil && (live == 0 || resp.Header.Get(noHandlerHeader) == "") {
			s.metrics.count(rt.pattern, resp.StatusCode)
			s.relay(w, resp)
			return
		}
		if err == nil { // the instance no longer handles the pattern
			resp.Body.Close()
			err = &notHandledError{fmt.Errorf("%w: no handler", ErrNoService)}
		}
		if r.Context().Err() != nil {
			return // the client went away; nobody reads an answer
		}
		if !notHandled(err) {
			s.log.Debug("nano: proxied call failed", "pattern", rt.pattern, "address", in.addr, "error", err)
			s.answerError(w, rt.pattern, upstreamError(err, rt.pattern))
			return
		}
		s.metrics.failovers.Add(1)
		if s.routes.remove(rt.pattern, in.addr, time.Now().Add(s.opts.TTL)) {
			s.log.Warn("nano: instance failed, trying another", "pattern", rt.pattern, "address", in.addr, "error", err)
		}
	}
	s.answerError(w, rt.pattern, fmt.Errorf("%w: %q: no instance answered", ErrServiceUnavailable, rt.pattern))
}

// send posts the message to one instance, with the end-to-end fields of
// header.
func (s *Server) send(ctx context.Context, in instance, header http.Header, body []byte) (*http.Response, error) {
	resp, err := s.sender.send(ctx, in.addr, header, body)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	return resp, nil
}

// relay copies a service's answer to the client.
func (s *Server) relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	if resp.ContentLength >= 0 { // the writer can stream with it
		if iw, ok := w.(*inWriter); ok {
			iw.setLength(resp.ContentLength) // no text to write and parse again
		} else {
			w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
	}
	w.WriteHeader(resp.StatusCode)
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	if _, err := io.CopyBuffer(w, resp.Body, *buf); err != nil {
		// The status is sent: abort the connection so the client sees a
		// truncated answer rather than a complete-looking one.
		panic(http.ErrAbortHandler)
	}
}

// copyBuffers hold the buffers that relay copies answers through.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// upstreamError is the error a client of the server sees when a service
// cannot be reached: the pattern, never the service's address.
func upstreamError(err error, pattern string) error {
	if errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: %q", ErrTimeout, pattern)
	}
	return fmt.Errorf("%w: %q", ErrServiceUnavailable, pattern)
}

// messagePattern returns the canonical Pattern of a JSON message.
func messagePattern(body []byte) (string, error) {
	m, err := readMessage(body)
	if err != nil {
		return "", err
	}
	if m.Pattern == nil {
		return "", fmt.Errorf("%w: no Pattern field", ErrInvalidMessage)
	}
	return parsePattern(*m.Pattern)
}
