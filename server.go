package nano

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
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
	// with every registration. Empty means registrations are not
	// authenticated: run the server on a trusted network only.
	Token string
	// MaxBodyBytes limits the size of a request body; larger bodies are
	// answered with 413. Zero means 4 MiB.
	MaxBodyBytes int64
	// ReadHeaderTimeout bounds the reading of a request's headers. Zero
	// means 5 seconds; negative means no limit.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request. Zero means 30
	// seconds; negative means no limit.
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
	// Transport carries the proxied calls. Nil means a transport owned by
	// the server, with keep-alive pools sized for a busy proxy.
	Transport http.RoundTripper
	// Logger receives the server's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Server routes JSON messages to the services whose registered pattern is
// the longest whole-field prefix of the message's "Pattern".
//
// It answers POST /register with the registration of a service and proxies
// POST requests on every other path. Registrations live in the registry
// (Redis, or the embedded one) and are mirrored in memory, so routing a
// known pattern needs no Redis round trip.
//
// A Server is safe for concurrent use. Create one with NewServer or
// NewServerWithOptions: the zero Server is not usable.
type Server struct {
	opts      ServerOptions     // with defaults applied
	log       *slog.Logger      // opts.Logger
	reg       registry          // the source of truth
	routes    mirror[*route]    // mirror of reg, answers the hot path
	misses    flight[*route]    // merges concurrent registry lookups
	transport http.RoundTripper // opts.Transport, carries every proxied call
	handler   http.Handler      // serveHTTP

	// writeMu serializes registry writes with their mirror updates, so
	// that two registrations of one pattern leave both in the same state.
	writeMu sync.Mutex

	endpoints endpoints // the http.Servers started by Serve
	closeOnce sync.Once // runs Shutdown
	closeErr  error     // set by the first Shutdown
}

// route is where a registered pattern leads.
type route struct {
	reg Registration
	url string // "http://" + reg.ServiceAddress + "/"
}

func newRoute(reg Registration) *route {
	return &route{reg: reg, url: "http://" + reg.ServiceAddress + "/"}
}

// Defaults of the server options.
const (
	defaultServerAddr        = ":9999"
	defaultKeyPrefix         = "nano:"
	defaultReadHeaderTimeout = 5 * time.Second
	defaultReadTimeout       = 30 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
	defaultUpstreamTimeout   = 30 * time.Second
	defaultRegistryTimeout   = 3 * time.Second
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
// Redis, when opts.Redis is set, and loads the registry into the server's
// mirror; it fails with ErrRegistryUnavailable if Redis does not answer.
func NewServerWithOptions(opts ServerOptions) (*Server, error) {
	opts = opts.withDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		transport: opts.Transport,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*opts.RegistryTimeout)
	defer cancel()
	if opts.Redis == nil {
		s.reg = &memRegistry{}
	} else {
		r, err := newRedisRegistry(ctx, opts.Redis, opts.KeyPrefix)
		if err != nil {
			return nil, err
		}
		s.reg = r
	}
	regs, err := s.reg.all(ctx)
	if err != nil {
		s.reg.close()
		return nil, err
	}
	for _, r := range regs {
		s.routes.insert(r.Pattern, newRoute(r))
	}

	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Addr == "" {
		o.Addr = defaultServerAddr
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultKeyPrefix
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
	if o.Transport == nil {
		o.Transport = newTransport()
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
	o := s.opts
	hs := newHTTPServer(s.handler, s.log, o.ReadHeaderTimeout, o.ReadTimeout, o.WriteTimeout, o.IdleTimeout)
	s.log.Info("nano: server listening", "addr", l.Addr().String(), "registry", s.registryName())
	return s.endpoints.serve(hs, l)
}

// Handler returns the server's HTTP handler, for use with an http.Server
// of your own or in tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Shutdown stops the server gracefully: it stops accepting connections,
// waits for the requests in flight to finish or ctx to end, and closes the
// registry connection. It is idempotent; later calls to Serve return
// ErrClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.endpoints.shutdown(ctx)
		if ci, ok := s.transport.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
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

// serveHTTP dispatches by path: /register, or a message to proxy.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/register" {
		s.register(w, r)
		return
	}
	s.proxy(w, r)
}

// register handles POST /register.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, ErrMethodNotAllowed)
		return
	}
	if !s.authorized(r) {
		writeError(w, fmt.Errorf("%w: a valid bearer token is required to register", ErrUnauthorized))
		return
	}
	body, err := readBody(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	var reg Registration
	if err := json.Unmarshal(body, &reg); err != nil {
		writeError(w, fmt.Errorf("%w: %v", ErrInvalidMessage, err))
		return
	}
	if reg, err = reg.normalize(); err != nil {
		writeError(w, err)
		return
	}
	if err := s.store(r.Context(), reg); err != nil {
		s.log.Warn("nano: registration failed", "pattern", reg.Pattern, "address", reg.ServiceAddress, "error", err)
		writeError(w, err)
		return
	}
	s.log.Info("nano: service registered", "pattern", reg.Pattern, "address", reg.ServiceAddress)
	writeJSON(w, http.StatusOK, reg)
}

// store writes a registration to the registry, then to the mirror.
func (s *Server) store(ctx context.Context, reg Registration) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.opts.RegistryTimeout)
	defer cancel()
	if err := s.reg.register(ctx, reg); err != nil {
		return err
	}
	s.routes.insert(reg.Pattern, newRoute(reg))
	return nil
}

// authorized reports whether a write request carries the token, when one
// is set. The comparison takes the same time whatever the token sent.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) == 1
}

// proxy handles every path but /register: it routes the message by its
// Pattern and passes the service's answer back.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, ErrMethodNotAllowed)
		return
	}
	body, err := readBody(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := messagePattern(body)
	if err != nil {
		writeError(w, err)
		return
	}
	rt, err := s.resolve(r.Context(), p)
	if err != nil {
		writeError(w, err)
		return
	}
	s.forward(w, r, rt, body)
}

// resolve finds the route of a canonical pattern: from the mirror, or on
// a miss from the registry in one round trip shared by concurrent misses.
func (s *Server) resolve(ctx context.Context, p string) (*route, error) {
	if _, rt, ok := s.routes.lookup(p); ok {
		return rt, nil
	}
	return s.misses.do(p, func() (*route, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.RegistryTimeout)
		defer cancel()
		reg, ok, err := s.reg.lookup(ctx, p)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrNoService, p)
		}
		// A registration stored meanwhile is newer than what was read:
		// keep it.
		return s.routes.insertNew(reg.Pattern, newRoute(reg)), nil
	})
}

// forward sends the message to the service of rt and copies its answer.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, rt *route, body []byte) {
	ctx := r.Context()
	if s.opts.UpstreamTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.UpstreamTimeout)
		defer cancel()
	}
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, rt.url, bytes.NewReader(body))
	if err != nil {
		writeError(w, fmt.Errorf("%w: %q", ErrServiceUnavailable, rt.reg.Pattern))
		return
	}
	copyHeader(out.Header, r.Header)
	if out.Header.Get("Content-Type") == "" {
		out.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.transport.RoundTrip(out)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nobody reads an answer
		}
		err = transportError(ctx, err)
		s.log.Debug("nano: proxied call failed", "pattern", rt.reg.Pattern, "address", rt.reg.ServiceAddress, "error", err)
		writeError(w, upstreamError(err, rt.reg.Pattern))
		return
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		// The status is sent: abort the connection so the client sees a
		// truncated answer rather than a complete-looking one.
		panic(http.ErrAbortHandler)
	}
}

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
	var m struct {
		Pattern *string
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	if m.Pattern == nil {
		return "", fmt.Errorf("%w: no Pattern field", ErrInvalidMessage)
	}
	return parsePattern(*m.Pattern)
}
