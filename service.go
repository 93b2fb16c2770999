package nano

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/armon/go-radix"
)

// ServiceOptions configures a Service. Addr and Server are required; the
// zero value of every other field is a usable default.
type ServiceOptions struct {
	// Addr is the host:port other processes reach this service at, sent to
	// the server when registering. A port of 0 takes the port of the
	// listener the service serves on.
	Addr string
	// ListenAddr is the address ListenAndServe listens on. Empty means all
	// interfaces on the port of Addr.
	ListenAddr string
	// Server is the host:port of the nano server the service registers at
	// and routes Act calls through.
	Server string
	// Servers are more nano servers, host:port each, sharing Server's
	// registry: when the current server does not answer, registrations,
	// renewals and Act go to the next, in turn, so that one server down
	// does not let the service's registrations expire. Nil means none.
	Servers []string
	// Token is sent as "Authorization: Bearer <Token>" when registering.
	// Empty means none.
	Token string
	// RetryInterval is the longest wait between two registration attempts
	// while the server cannot be reached; the first retry comes after
	// 100 ms and the wait doubles up to this, or up to a third of the
	// server's TTL once a registration was accepted. Zero means 5 seconds;
	// it cannot be negative.
	RetryInterval time.Duration
	// MaxBodyBytes limits the size of a message; larger ones are answered
	// with 413. Zero means 4 MiB; negative means no limit.
	MaxBodyBytes int64
	// MaxHeaderBytes limits the request line and headers of a request;
	// larger ones are answered with 431. It also bounds the status line and
	// headers of the answers the service's Act calls read. Zero means
	// 1 MiB; negative means no limit.
	MaxHeaderBytes int
	// MaxConns bounds the connections the service holds open at once: at
	// the bound, new connections wait until one closes. Zero means 10 000;
	// negative means no limit.
	MaxConns int
	// ReadHeaderTimeout bounds the reading of a request's headers, and
	// ReadTimeout the reading of the whole request, headers and body.
	// WriteTimeout bounds the time from the end of the request headers to
	// the end of the answer, the handler's time included, and IdleTimeout
	// the wait for the next request on a kept connection. Zero means 5 s,
	// 30 s, 60 s and 2 min; negative means no limit.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// CallTimeout bounds each Act call and each registration attempt. Zero
	// means 30 seconds; negative means no limit.
	CallTimeout time.Duration
	// PeerTTL is how long Act calls the instances of a pattern directly
	// before asking the server again. Zero means 10 seconds; negative
	// disables the cache.
	PeerTTL time.Duration
	// Middleware wraps every handler of the service, those of Add and
	// Handle included. The first runs first: with {logging, auth}, a
	// message goes through logging, then auth, then the handler. The
	// library's own work (the call's context and deadline, the Observer,
	// metrics, recovery from panics) runs outside all of them. Nil means
	// none.
	Middleware []func(next Handler) Handler
	// Outliers configures the ejection of the instances Act calls directly
	// when they fail again and again (see Outliers); its zero value is the
	// defaults.
	Outliers Outliers
	// Observer, if not nil, is told of every message the service handles
	// and every call its Act makes, and carries their context on (see
	// Observer). Nil means the service passes on the W3C Trace Context
	// of each message to the calls its handler makes with the message's
	// context.
	Observer Observer
	// TLS, when not nil, makes the service serve HTTPS with this
	// configuration, and register as an instance that speaks TLS: servers
	// and callers then reach it at https://Addr, and check its certificate
	// for the host of Addr. To require certificates from them (mutual
	// TLS), set ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs.
	// The service speaks HTTP/1.1 only: NextProtos is replaced. Nil means
	// plain HTTP.
	TLS *tls.Config
	// ClientTLS, when not nil, makes the service reach its servers over
	// HTTPS, for registrations and Act, and configures its TLS connections
	// to servers and instances, as ClientOptions.TLS does: the roots that
	// sign their certificates and the certificate it presents to those
	// that require one. Nil means plain HTTP to the servers, and the
	// system's roots for instances that speak TLS.
	ClientTLS *tls.Config
	// Transport carries registrations and Act calls. Nil means the
	// service's own pool of kept-alive HTTP/1.1 connections, which runs
	// each call on the caller's goroutine (see the package documentation).
	Transport http.RoundTripper
	// Logger receives the service's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// HandlerFunc handles a message: it receives the raw JSON body and returns
// the body of the answer. An error is answered with status 500 and
// {"error": err.Error()}, or with the status of an *Error.
type HandlerFunc func(msg []byte) ([]byte, error)

// Service serves handlers for patterns, registers the patterns at a nano
// server and calls other services with Act.
//
// A Service is safe for concurrent use. Create one with NewService or
// NewServiceWithOptions: the zero Service is not usable.
type Service struct {
	// The fields below are those of the original library's Service, for
	// programs that read them. They are set when the service is created
	// (Pattern by Add and Handle) and are read-only: the service neither
	// reads them back nor notices a change.

	// ServiceAddress is the host:port the service registers, as given to
	// NewService or in ServiceOptions.Addr (with a port of 0, the port
	// the service advertises once serving is not reflected here).
	ServiceAddress string
	// ServicePort is the port of ServiceAddress.
	ServicePort int
	// ServerAddress is the host:port of the first nano server.
	ServerAddress string
	// ServerPort is the port of ServerAddress.
	ServerPort int
	// Pattern is the pattern of the latest Add, Handle or HandleContext
	// call. Read it from the goroutine that made the calls, or once they
	// have returned: another Handle running at the same time changes it.
	Pattern string
	// Cache exists so that programs naming it compile; the service does
	// not use it (its peer cache is internal and safe for concurrent use).
	Cache radix.Tree

	opts      ServiceOptions               // with defaults applied
	log       *slog.Logger                 // opts.Logger
	client    *Client                      // carries Act calls
	routes    mirror[*handler]             // pattern -> handler
	self      atomic.Pointer[Registration] // advertised address, once known
	done      chan struct{}                // closed by Shutdown: ends registration loops
	finished  chan struct{}                // closed when the first Shutdown returns: ends Add
	abort     chan struct{}                // closed when Shutdown's ctx ends: cancels registrations in flight
	acked     atomic.Bool                  // the server announced a TTL, so it has /deregister
	pending   atomic.Int64                 // patterns not registered yet
	refused   atomic.Pointer[string]       // why a server refused a registration for good
	forbidden sync.Map                     // pattern -> why a server answers 403 to its registration (string); asked again
	loops     sync.WaitGroup               // registration loops
	endpoint  *endpoint                    // serves the connections given to Serve
	metrics   serviceMetrics               // what GET /metrics shows

	mu      sync.Mutex // guards serving, adding, closed
	serving bool       // Serve was called: patterns get registered
	adding  bool       // an Add call is serving
	closed  bool       // set by Shutdown
}

// handler is a registered pattern with its handler, wrapped in the
// service's middleware.
type handler struct {
	pattern string
	fn      Handler
	field   []string       // pattern as the value of the Nano-Service header
	context bool           // fn may use its context: it is not a bare HandlerFunc
	metrics handlerMetrics // what GET /metrics shows of it
}

// Defaults of the service options.
const (
	defaultRetryInterval  = 5 * time.Second
	defaultWriteTimeout   = time.Minute
	firstRetry            = 100 * time.Millisecond
	deregisterTimeout     = 5 * time.Second
	lateDeregisterTimeout = time.Second // once Shutdown's context has ended
)

// NewService returns a service reached at serviceAddress:servicePort that
// registers at the nano server at serverAddress:serverPort, as in the
// original library. The environment variables NANO_SERVICE_ADDRESS and
// NANO_SERVER_ADDRESS, when set, replace the two hosts (the ports stay);
// NANO_SERVER_ADDRESS may list several hosts, separated by commas, which
// become ServiceOptions.Servers;
// NANO_TOKEN, when set, becomes ServiceOptions.Token. The service listens on
// all interfaces. TLS comes from the environment too, as files read again
// when they change: NANO_TLS_CERT and NANO_TLS_KEY, the service's
// certificate (it serves HTTPS with it and registers as TLS); NANO_TLS_CA,
// the bundle that signs the certificates of the servers, which it then
// reaches over HTTPS, of TLS peers, and, with NANO_TLS_CLIENT_CERTS=true,
// of every caller, which it then requires; with the bundle, the service
// presents its certificate to servers and peers that require one.
//
// If the addresses or the TLS settings are not valid, NewService logs the
// error and exits the process with status 1; use NewServiceWithOptions
// to handle the error.
func NewService(serviceAddress string, servicePort int, serverAddress string, serverPort int) *Service {
	if h := os.Getenv("NANO_SERVICE_ADDRESS"); h != "" {
		serviceAddress = h
	}
	var more []string
	if h := os.Getenv("NANO_SERVER_ADDRESS"); h != "" {
		hosts := strings.Split(h, ",")
		serverAddress = strings.TrimSpace(hosts[0])
		for _, h := range hosts[1:] {
			more = append(more, net.JoinHostPort(strings.TrimSpace(h), strconv.Itoa(serverPort)))
		}
	}
	serve, call, err := tlsFromEnv()
	if err != nil {
		fatal(slog.Default(), "nano: cannot create service", err)
	}
	s, err := NewServiceWithOptions(ServiceOptions{
		Addr:      net.JoinHostPort(serviceAddress, strconv.Itoa(servicePort)),
		Server:    net.JoinHostPort(serverAddress, strconv.Itoa(serverPort)),
		Servers:   more,
		Token:     os.Getenv("NANO_TOKEN"),
		TLS:       serve,
		ClientTLS: call,
	})
	if err != nil {
		fatal(slog.Default(), "nano: cannot create service", err)
	}
	return s
}

// NewServiceWithOptions returns a service configured by opts. It fails
// with ErrInvalidOptions for options it cannot work with.
func NewServiceWithOptions(opts ServiceOptions) (*Service, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	client, err := NewClient(ClientOptions{
		Server:    opts.Server,
		Servers:   opts.Servers,
		Timeout:   opts.CallTimeout,
		PeerTTL:   opts.PeerTTL,
		Outliers:  opts.Outliers,
		Observer:  opts.Observer,
		TLS:       opts.ClientTLS,
		Transport: orDefault(opts.Transport, opts.MaxHeaderBytes, opts.ClientTLS),
		Logger:    opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	_, servicePort, _ := splitHostPort(opts.Addr) // checked by withDefaults
	_, serverPort, _ := splitHostPort(opts.Server)
	s := &Service{
		ServiceAddress: opts.Addr,
		ServicePort:    servicePort,
		ServerAddress:  opts.Server,
		ServerPort:     serverPort,
		Cache:          *radix.New(),
		opts:           opts,
		log:            opts.Logger,
		client:         client,
		done:           make(chan struct{}),
		finished:       make(chan struct{}),
		abort:          make(chan struct{}),
	}
	s.endpoint = newEndpoint(http.HandlerFunc(s.serveHTTP), httpOptions{
		readHeaderTimeout: opts.ReadHeaderTimeout,
		readTimeout:       opts.ReadTimeout,
		writeTimeout:      opts.WriteTimeout,
		idleTimeout:       opts.IdleTimeout,
		maxHeaderBytes:    opts.MaxHeaderBytes,
		maxConns:          opts.MaxConns,
		tls:               opts.TLS,
		log:               opts.Logger,
	})
	return s, nil
}

// withDefaults checks the options and returns them with the defaults
// applied.
func (o ServiceOptions) withDefaults() (ServiceOptions, error) {
	if _, _, err := splitHostPort(o.Addr); err != nil {
		return o, fmt.Errorf("%w: ServiceOptions.Addr: %v", ErrInvalidOptions, err)
	}
	if err := dialAddr(o.Server); err != nil {
		return o, fmt.Errorf("%w: ServiceOptions.Server: %v", ErrInvalidOptions, err)
	}
	if o.ListenAddr == "" {
		_, port, _ := net.SplitHostPort(o.Addr)
		o.ListenAddr = ":" + port
	}
	if err := listenAddr(o.ListenAddr); err != nil {
		return o, fmt.Errorf("%w: ServiceOptions.ListenAddr: %v", ErrInvalidOptions, err)
	}
	if err := o.Outliers.check("ServiceOptions"); err != nil {
		return o, err
	}
	if o.RetryInterval < 0 {
		return o, fmt.Errorf("%w: ServiceOptions.RetryInterval cannot be negative", ErrInvalidOptions)
	}
	o.RetryInterval = max(durationOr(o.RetryInterval, defaultRetryInterval), firstRetry)
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if o.MaxConns == 0 {
		o.MaxConns = defaultMaxConns
	}
	o.ReadHeaderTimeout = durationOr(o.ReadHeaderTimeout, defaultReadHeaderTimeout)
	o.ReadTimeout = durationOr(o.ReadTimeout, defaultReadTimeout)
	o.WriteTimeout = durationOr(o.WriteTimeout, defaultWriteTimeout)
	o.IdleTimeout = durationOr(o.IdleTimeout, defaultIdleTimeout)
	o.CallTimeout = durationOr(o.CallTimeout, defaultCallTimeout)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// Add registers handle for pattern, serves it and blocks, as in the
// original library: the first Add listens on the service's port and
// returns only once Shutdown has returned, the requests in flight drained;
// an Add called while the service already serves (from another goroutine)
// registers its pattern and blocks likewise.
//
// If the pattern is not valid or the port cannot be listened on, Add logs
// the error and exits the process with status 1; use Handle and
// ListenAndServe to handle errors. After Shutdown, Add returns at once.
func (s *Service) Add(pattern string, handle func([]byte) ([]byte, error)) {
	if err := s.Handle(pattern, handle); err != nil {
		if errors.Is(err, ErrClosed) {
			return
		}
		fatal(s.log, "nano: cannot add handler", err)
	}
	s.mu.Lock()
	first := !s.adding && !s.serving
	s.adding = true
	s.mu.Unlock()
	if first {
		if err := s.ListenAndServe(); err != nil && !errors.Is(err, ErrClosed) {
			fatal(s.log, "nano: service failed", err)
		}
	}
	<-s.finished
}

// Handle sets the handler of a pattern, a HandlerFunc that receives the
// message's body; HandleContext takes one with the message's context. If
// the service is serving, the pattern is registered at the server at once,
// otherwise when Serve or ListenAndServe starts; registration is retried in
// the background until the server accepts it. Handle does not block.
//
// A message is handled by the handler whose pattern is the longest
// whole-field prefix of the message's Pattern. Handle fails with
// ErrInvalidPattern for a pattern that is not valid or already has a
// handler, and with ErrClosed after Shutdown.
func (s *Service) Handle(pattern string, fn HandlerFunc) error {
	if fn == nil {
		return fmt.Errorf("%w: nil handler for %q", ErrInvalidOptions, pattern)
	}
	return s.handle(pattern, func(_ context.Context, req *Request) ([]byte, error) { return fn(req.Body) }, false)
}

// HandleContext sets the handler of a pattern, as Handle does, with a
// Handler: one that receives the message's context, which ends when the
// caller hangs up or the call's deadline passes, and the request with its
// body, its matched pattern and its header.
func (s *Service) HandleContext(pattern string, fn Handler) error {
	return s.handle(pattern, fn, true)
}

// handle sets fn, wrapped in the middleware, as the handler of pattern.
// usesContext says whether fn reads its context: the context of a call
// whose handler, middleware and Observer never look at it is not made.
func (s *Service) handle(pattern string, fn Handler, usesContext bool) error {
	p, err := parsePattern(pattern)
	if err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("%w: nil handler for %q", ErrInvalidOptions, p)
	}
	for i := len(s.opts.Middleware) - 1; i >= 0; i-- {
		fn = s.opts.Middleware[i](fn)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, dup := s.routes.get(p); dup {
		return fmt.Errorf("%w: %q already has a handler", ErrInvalidPattern, p)
	}
	usesContext = usesContext || len(s.opts.Middleware) > 0 || s.opts.Observer != nil
	s.Pattern = p
	s.routes.insert(p, &handler{pattern: p, fn: fn, field: []string{p}, context: usesContext})
	if s.serving {
		s.startRegistration(p)
	}
	return nil
}

// Act calls a service by pattern, as Client.Act does, through this
// service's server and peer cache.
func (s *Service) Act(jsonMsg []byte, pattern string) ([]byte, error) {
	return s.client.ActContext(context.Background(), jsonMsg, pattern)
}

// ActContext calls a service by pattern, as Client.ActContext does.
func (s *Service) ActContext(ctx context.Context, jsonMsg []byte, pattern string) ([]byte, error) {
	return s.client.ActContext(ctx, jsonMsg, pattern)
}

// ListenAndServe listens on opts.ListenAddr and serves until Shutdown,
// when it returns ErrClosed.
func (s *Service) ListenAndServe() error {
	l, err := net.Listen("tcp", s.opts.ListenAddr)
	if err != nil {
		return fmt.Errorf("nano: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l, registers the service's patterns at the
// server and serves until Shutdown, when it returns ErrClosed. It closes l
// when it returns. When the port of opts.Addr is 0, the service advertises
// the port of l.
func (s *Service) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	if !s.serving {
		s.serving = true
		s.self.Store(s.advertise(l.Addr()))
		s.routes.each(func(p string, _ *handler) { s.startRegistration(p) })
	}
	s.mu.Unlock()
	s.log.Info("nano: service listening", "addr", l.Addr().String(), "advertised", s.self.Load().target(), "server", s.client.serverURL(s.client.servers.current(), "/"))
	return s.endpoint.serve(l)
}

// Handler returns the service endpoint, the handler Serve runs, for use
// with an http.Server of your own. Patterns are registered at the server
// only by Serve and ListenAndServe. After Shutdown it answers 503.
func (s *Service) Handler() http.Handler { return s.endpoint }

// Shutdown stops the service gracefully: it stops renewing its
// registrations, deregisters its patterns (so that servers route no new
// message here), stops accepting connections and waits for the requests
// in flight to finish, or for ctx to end, when it closes their
// connections and returns ctx's error. It is idempotent; later calls to
// Serve and Handle return ErrClosed.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	serving := s.serving
	s.mu.Unlock()
	defer close(s.finished)

	// Let a registration in flight finish before deregistering, or it
	// could land after the deregistration and bring the instance back.
	close(s.done)
	stopped := make(chan struct{})
	go func() {
		s.loops.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		close(s.abort)
		<-stopped
	}
	if serving && s.acked.Load() {
		s.deregisterAll(ctx)
	}
	err := s.endpoint.shutdown(ctx)
	s.client.Close()
	return err
}

// readyz answers GET /readyz: 200 once Serve (or Add) registered every
// pattern at the server at least once, 503 before and after Shutdown
// began.
// firstForbidden is why a server answers 403 to one of the service's
// registrations, empty when none does.
func (s *Service) firstForbidden() string {
	var why string
	s.forbidden.Range(func(_, v any) bool {
		why = v.(string)
		return false
	})
	return why
}

func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	serving, closed := s.serving, s.closed
	s.mu.Unlock()
	var why string
	switch n := s.pending.Load(); {
	case closed:
		why = "shutting down"
	case !serving:
		why = "not serving yet"
	case s.refused.Load() != nil:
		why = *s.refused.Load()
	case s.firstForbidden() != "":
		why = s.firstForbidden()
	case n > 0:
		why = fmt.Sprintf("%d pattern(s) not registered yet", n)
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}
	writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Message: "nano: service not ready: " + why})
}
