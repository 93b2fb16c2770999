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
	"github.com/go-redis/redis/v8"
)

// ServerOptions configures a Server. The zero value is a server on port
// 9999 with an embedded in-memory registry and the defaults below.
//
// In every options struct of this package, zero selects the documented
// default and a negative value lifts a limit or turns a feature off; an
// option for which that makes no sense (TTL, RegistryTimeout) rejects
// negative values with ErrInvalidOptions.
type ServerOptions struct {
	// Addr is the TCP address ListenAndServe listens on. Empty means ":9999".
	Addr string
	// Redis selects the shared registry: a standalone server, Sentinel
	// (MasterName set) or Cluster (several Addrs), as go-redis's
	// NewUniversalClient reads them. Nil means an embedded in-memory
	// registry that only this server sees.
	Redis *redis.UniversalOptions
	// KeyPrefix namespaces the Redis keys of the registry; it cannot hold
	// braces. Empty means "nano:".
	KeyPrefix string
	// OriginalKeys makes the server also keep the original library's
	// layout in Redis, for a rolling upgrade of a fleet whose servers
	// share one Redis: a string key per pattern, named by the pattern
	// alone and holding one instance's address. Registrations write it
	// (without expiry for the original's services, for one TTL for this
	// library's, never replacing an address that has no expiry),
	// deregistrations delete it, and a message the mirror has no route
	// for is looked up in it too, so that an original server and this one
	// route each other's services. False means the server touches no key
	// outside KeyPrefix. It requires Redis. See the migration guide.
	OriginalKeys bool
	// Token, when not empty, must be sent as "Authorization: Bearer <Token>"
	// with every registration and deregistration, and to read GET
	// /services. Empty means they are not authenticated: run the server on
	// a trusted network only.
	Token string
	// MaxBodyBytes limits the size of a request body; larger bodies are
	// answered with 413. Zero means 4 MiB; negative means no limit.
	MaxBodyBytes int64
	// MaxHeaderBytes limits the request line and headers of a request
	// (larger ones are answered with 431), and, with the default
	// Transport, the status line and headers of a service's answer
	// (larger ones are answered with 502). Zero means 1 MiB; negative means
	// no limit.
	MaxHeaderBytes int
	// MaxConns bounds the connections the server holds open at once: at
	// the bound, new connections wait until one closes. Zero means 10 000;
	// negative means no limit.
	MaxConns int
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
	// ReadTimeout bounds the reading of a whole request, headers and body.
	// Zero means 30 seconds; negative means no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request headers to
	// the end of the answer, which includes the upstream call. Zero means
	// UpstreamTimeout plus 10 seconds (no limit if UpstreamTimeout has
	// none); negative means no limit.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next
	// request. Zero means 2 minutes; negative means no limit.
	IdleTimeout time.Duration
	// UpstreamTimeout bounds one proxied call to a service, from dial to
	// the end of its answer; a service that takes longer is answered with
	// 504. Zero means 30 seconds; negative means no limit beyond the
	// client's: a client that hangs up always cancels the call.
	UpstreamTimeout time.Duration
	// RegistryTimeout bounds each call to Redis. Zero means 3 seconds; a
	// registry call always has a limit.
	RegistryTimeout time.Duration
	// TTL is how long a registration lives unless the service renews it;
	// it cannot be under MinTTL.
	// Services renew at a third of it, which the server tells them in its
	// answer to /register. Zero means 30 seconds. Servers sharing a Redis
	// should use the same TTL. Registrations of the original library's
	// services, which never renew, do not expire: they leave when the
	// instance cannot be reached.
	TTL time.Duration
	// ResyncInterval is how often the server checks that Redis did not
	// lose the registry (restarted empty, say), when it reads the registry
	// again. The server follows the registry's changes as they are made,
	// and reads it whole only at start, after such a loss, or when it
	// fell too far behind the changes. Zero means 10 seconds; negative
	// turns the check off. It does not apply to the embedded registry.
	ResyncInterval time.Duration
	// Outliers configures the ejection of instances that fail again and
	// again (see Outliers); its zero value is the defaults.
	Outliers Outliers
	// Observer, if not nil, is told of every message the server proxies
	// and writes what the message's context carries into the header of
	// its call to the service (see Observer). Nil means the header fields
	// of the message, W3C Trace Context among them, pass on unchanged.
	Observer Observer
	// TLS, when not nil, makes the server serve HTTPS with this
	// configuration: to clients, to services registering, to the
	// callers of /resolve. To require certificates from them (mutual
	// TLS), set ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs;
	// Identities then decides which patterns each may register. The server
	// speaks HTTP/1.1 only: NextProtos is replaced. Nil means plain HTTP.
	TLS *tls.Config
	// UpstreamTLS configures the server's TLS connections to the instances
	// registered as TLS: the roots that sign their certificates (RootCAs)
	// and the certificate it presents to those that require one. Each
	// connection takes a clone, with ServerName the host of the instance's
	// address when none is set (a VerifyConnection sees that host in
	// ConnectionState.ServerName, an IP address included), and the
	// connections share a session cache when none is set. Nil means the
	// system's roots and no certificate. It does not apply to a Transport
	// of the program's own.
	UpstreamTLS *tls.Config
	// Identities, when not nil, authorizes registrations by the identity
	// of the client's certificate: a registration or deregistration is
	// accepted only over TLS, from a client whose certificate crypto/tls
	// verified against ClientCAs and names an identity that may register
	// the pattern (see Identities); others are answered 403, logged and
	// counted. TLS.ClientAuth must be RequireAndVerifyClientCert or
	// VerifyClientCertIfGiven (set it on the top-level configuration too
	// when a GetConfigForClient returns others), and OriginalKeys must be
	// off. It holds only if every server sharing the registry sets the
	// same Identities. The Token, if set, is required as well.
	// Server.SetIdentities replaces them while the server runs. Nil means
	// any client may register any pattern (with the Token, if set).
	Identities Identities
	// Transport carries the proxied calls. Nil means the server's own
	// pool of kept-alive HTTP/1.1 connections, which runs each call on
	// the request's goroutine (see the package documentation).
	Transport http.RoundTripper
	// Logger receives the server's logs. Nil means slog.Default(). The
	// lines go-redis writes of its own go there too, at warning level:
	// go-redis has one logger per process, which follows the most recent
	// server created with a Redis registry.
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
	// Cache exists so that programs naming the original library's field
	// compile; the server does not use it (its mirror is internal and safe
	// for concurrent use). The original's Redis field has no counterpart:
	// it was a client of another major version of go-redis.
	Cache radix.Tree

	opts                ServerOptions     // with defaults applied
	log                 *slog.Logger      // opts.Logger
	reg                 registry          // the source of truth
	routes              routeTable        // mirror of reg, answers the hot path
	misses              flight[*route]    // merges concurrent registry lookups
	transport           http.RoundTripper // carries every proxied call
	outliers            outlierDetector   // ejects instances that fail again and again
	endpoint            *endpoint         // serves the connections given to Serve
	ready               atomic.Bool       // the registry answered when last asked
	failedRegistrations atomic.Int64      // registrations refused since the registry stopped answering
	readyMu             sync.Mutex        // serializes the changes of ready
	redis               *redisRegistry    // reg, when it is Redis
	epochs              []string          // the Redis shards' epochs last seen (maintenance loop)
	reconcileAt         atomic.Int64      // when to read a registry that lost its data again, Unix nanoseconds; 0 if not
	reapAfter           atomic.Int64      // the reaper waits until then (Unix nanoseconds): services renew first
	stop                chan struct{}     // closed by Shutdown: ends the loops
	loops               sync.WaitGroup    // maintenance and subscription loops

	metrics    serverMetrics              // what GET /metrics shows
	identities atomic.Pointer[Identities] // opts.Identities, replaced by SetIdentities; nil: no check

	draining  atomic.Bool   // set by Drain: /readyz answers 503
	closeOnce sync.Once     // runs Shutdown
	closeErr  error         // set by the first Shutdown
	finished  chan struct{} // closed when the first Shutdown returns
}

// Defaults of the server options.
const (
	defaultServerAddr      = ":9999"
	defaultKeyPrefix       = "nano:"
	defaultMaxPatterns     = 100_000
	defaultUpstreamTimeout = 30 * time.Second
	defaultRegistryTimeout = 3 * time.Second
	defaultTTL             = 30 * time.Second
	defaultResyncInterval  = 10 * time.Second
)

// NewServer returns a server listening on listenPort with its registry in
// the Redis at redisAddress, as the original library did. An empty
// redisAddress selects the embedded in-memory registry. The environment
// variable NANO_TOKEN, when set, becomes ServerOptions.Token. TLS comes
// from the environment too, as files read again when they change:
// NANO_TLS_CERT and NANO_TLS_KEY, the server's certificate (HTTPS is
// served with it); NANO_TLS_CA, the bundle that signs the certificates of
// TLS services (the server presents its certificate to those that require
// one) and, with NANO_TLS_CLIENT_CERTS=true, those the server requires
// from every client; NANO_IDENTITIES, a file for LoadIdentities, which
// becomes ServerOptions.Identities (read once: SetIdentities replaces
// them).
//
// If Redis cannot be reached, or the environment's settings cannot be
// used, NewServer logs the error and exits the process with status 1;
// use NewServerWithOptions to handle the error.
func NewServer(redisAddress, redisPassword string, redisDB, listenPort int) *Server {
	opts := ServerOptions{
		Addr:  ":" + strconv.Itoa(listenPort),
		Token: os.Getenv("NANO_TOKEN"),
	}
	var err error
	if opts.TLS, opts.UpstreamTLS, err = tlsFromEnv(); err != nil {
		fatal(slog.Default(), "nano: cannot start server", err)
	}
	if file := os.Getenv("NANO_IDENTITIES"); file != "" {
		if opts.Identities, err = LoadIdentities(file); err != nil {
			fatal(slog.Default(), "nano: cannot start server", err)
		}
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

// NewServerWithOptions returns a server configured by opts. It fails with
// ErrInvalidOptions for options it cannot work with. It connects to Redis,
// when opts.Redis is set, and loads the whole registry into the server's
// mirror; it fails with ErrRegistryUnavailable if Redis does not answer
// within RegistryTimeout. The server keeps its mirror in step with the
// registry in the background until Shutdown.
func NewServerWithOptions(opts ServerOptions) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Cache:     *radix.New(),
		opts:      opts,
		log:       opts.Logger,
		transport: orDefault(opts.Transport, opts.MaxHeaderBytes, opts.UpstreamTLS),
		outliers:  outlierDetector{opts: opts.Outliers.withDefaults(), log: opts.Logger},
		stop:      make(chan struct{}),
		finished:  make(chan struct{}),
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
	if opts.Identities != nil {
		s.identities.Store(&opts.Identities)
	}
	s.routes.ttl = opts.TTL
	s.reapAfter.Store(time.Now().Add(opts.TTL).UnixNano()) // deadlines may have passed while no server ran
	s.ready.Store(true)
	if opts.Redis == nil {
		s.reg = &memRegistry{}
		s.loops.Go(s.maintain)
		return s, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.RegistryTimeout)
	defer cancel()
	r, err := newRedisRegistry(ctx, opts.Redis, opts.KeyPrefix, opts.OriginalKeys, opts.RegistryTimeout, opts.Logger)
	if err != nil {
		return nil, err
	}
	s.reg, s.redis = r, r
	// Where the changes end before the registry is read: every change made
	// while it is read is applied after.
	ids, err := r.positions(ctx)
	if err == nil {
		s.epochs, err = r.epochs(ctx)
	}
	if err == nil {
		_, err = s.resync(ctx)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	s.loops.Go(s.maintain)
	s.loops.Go(func() { r.follow(s.stop, ids, s.apply, s.reload) })
	return s, nil
}

// withDefaults checks the options and returns them with the defaults
// applied.
func (o ServerOptions) withDefaults() (ServerOptions, error) {
	if o.TTL < 0 || o.RegistryTimeout < 0 {
		return o, fmt.Errorf("%w: ServerOptions.TTL and RegistryTimeout cannot be negative", ErrInvalidOptions)
	}
	if o.TTL > 0 && o.TTL < MinTTL {
		return o, fmt.Errorf("%w: ServerOptions.TTL %v is under %v: services would renew every %v", ErrInvalidOptions, o.TTL, MinTTL, o.TTL/3)
	}
	if o.Redis != nil && len(o.Redis.Addrs) == 0 {
		return o, fmt.Errorf("%w: ServerOptions.Redis has no Addrs (for Sentinel, the sentinels' addresses)", ErrInvalidOptions)
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return o, fmt.Errorf("%w: ServerOptions.KeyPrefix cannot hold { or }: the registry's keys carry hash tags", ErrInvalidOptions)
	}
	if err := o.Outliers.check("ServerOptions"); err != nil {
		return o, err
	}
	if o.OriginalKeys && o.Redis == nil {
		return o, fmt.Errorf("%w: ServerOptions.OriginalKeys needs Redis", ErrInvalidOptions)
	}
	if o.Identities != nil {
		if o.TLS == nil || o.TLS.ClientAuth < tls.VerifyClientCertIfGiven {
			return o, fmt.Errorf("%w: ServerOptions.Identities needs TLS whose ClientAuth verifies client certificates (RequireAndVerifyClientCert or VerifyClientCertIfGiven)", ErrInvalidOptions)
		}
		if o.OriginalKeys {
			return o, fmt.Errorf("%w: ServerOptions.Identities and OriginalKeys exclude each other: the original's servers write its keys for anyone", ErrInvalidOptions)
		}
		ids, err := o.Identities.normalize()
		if err != nil {
			return o, err
		}
		o.Identities = ids
	}
	o = o.Defaults()
	if err := listenAddr(o.Addr); err != nil {
		return o, fmt.Errorf("%w: ServerOptions.Addr: %v", ErrInvalidOptions, err)
	}
	return o, nil
}

// MinTTL is the shortest ServerOptions.TTL a server takes: services renew
// their registrations every third of it.
const MinTTL = 100 * time.Millisecond

// Defaults returns o with each field left at zero set to the default it
// stands for, as NewServerWithOptions sets them; the other fields stay as
// they are. It is for programs that show the defaults, as cmd/nano-server
// does in its help.
func (o ServerOptions) Defaults() ServerOptions {
	if o.Addr == "" {
		o.Addr = defaultServerAddr
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultKeyPrefix
	}
	if o.MaxPatterns == 0 {
		o.MaxPatterns = defaultMaxPatterns
	}
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
	o.IdleTimeout = durationOr(o.IdleTimeout, defaultIdleTimeout)
	o.UpstreamTimeout = durationOr(o.UpstreamTimeout, defaultUpstreamTimeout)
	if o.WriteTimeout == 0 && o.UpstreamTimeout > 0 {
		o.WriteTimeout = o.UpstreamTimeout + 10*time.Second
	}
	o.RegistryTimeout = durationOr(o.RegistryTimeout, defaultRegistryTimeout)
	o.TTL = durationOr(o.TTL, defaultTTL)
	o.ResyncInterval = durationOr(o.ResyncInterval, defaultResyncInterval)
	o.Outliers = o.Outliers.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// listenAddr checks an address to listen on: host:port, where the host
// may be empty (all interfaces) and the port 0 (any free port).
func listenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port (0-65535)", addr)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostName(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return nil
}

// validHostName reports whether s can be a DNS host name: letters,
// digits, hyphens, underscores and dots, at most 253 bytes.
func validHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// Listen serves on the port given to NewServer and blocks. It returns once
// Shutdown has returned; on any other failure (the port is taken, say) it
// logs the error and exits the process with status 1.
func (s *Server) Listen() {
	if err := s.ListenAndServe(); err != nil && !errors.Is(err, ErrClosed) {
		fatal(s.log, "nano: server failed", err)
	}
	<-s.finished
}

// ListenAndServe listens on opts.Addr and serves until Shutdown begins,
// when it returns ErrClosed at once, as http.Server's does: a program must
// wait for Shutdown to return before it exits, or the requests in flight
// are cut short.
func (s *Server) ListenAndServe() error {
	l, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("nano: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l and serves them with net/http's
// http.Server until Shutdown begins, when it returns ErrClosed at once (see
// ListenAndServe). It closes l when it returns. It may be called for
// several listeners at once.
func (s *Server) Serve(l net.Listener) error {
	s.log.Info("nano: server listening", "addr", l.Addr().String(), "tls", s.opts.TLS != nil, "registry", s.registryName())
	return s.endpoint.serve(l)
}

// Handler returns the server's HTTP handler, the one Serve runs, for use
// with an http.Server of your own or in tests. After Shutdown it answers
// 503.
func (s *Server) Handler() http.Handler { return s.endpoint }

// Shutdown stops the server gracefully: it stops accepting connections and
// waits for the requests in flight to finish, or for ctx to end, when it
// closes their connections, which cancels them. Once the last handler has
// returned (handlers run by an http.Server of your own through Handler
// included), it stops keeping the mirror in step and closes the registry
// connection: never under a running handler. If ctx ends first, Shutdown
// returns ctx's error and that release happens later, when the last
// handler returns. Shutdown is idempotent; later calls to Serve return
// ErrClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		defer close(s.finished)
		err := s.endpoint.shutdown(ctx)
		released := make(chan error, 1)
		go func() {
			s.endpoint.wait() // the handlers use the registry
			close(s.stop)
			s.loops.Wait()
			closeIdle(s.transport)
			released <- s.reg.close()
		}()
		select {
		case rerr := <-released:
			s.closeErr = errors.Join(err, rerr)
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Server) registryName() string {
	if s.opts.Redis == nil {
		return "embedded"
	}
	return "redis " + strings.Join(s.opts.Redis.Addrs, ",")
}

// HealthHandler returns a handler of the server's GET /healthz, /readyz
// and /metrics alone (404 for any other path), for a program to serve on a
// port of its own, in plain HTTP: where the server requires client
// certificates, probes and metrics scrapers that present none can still
// reach them there. nano-server serves it with -health-port.
func (s *Server) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.healthEndpoint(w, r) {
			writeError(w, r, fmt.Errorf("%w: %s is not a health path", ErrNoService, r.URL.Path))
		}
	})
}

// healthEndpoint answers GET /healthz, /readyz and /metrics, and reports
// false, answering nothing, for any other path.
func (s *Server) healthEndpoint(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz":
		s.healthz(w, r)
	case "/readyz":
		s.readyz(w, r)
	case "/metrics":
		s.metricsEndpoint(w, r)
	default:
		return false
	}
	return true
}

// serveHTTP dispatches by path: the control endpoints of control.go, or a
// message to proxy (proxy.go).
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/register":
		s.register(w, r)
	case "/deregister":
		s.deregister(w, r)
	case "/resolve":
		s.resolveEndpoint(w, r)
	case "/healthz", "/readyz", "/metrics":
		s.healthEndpoint(w, r)
	case "/services":
		s.servicesEndpoint(w, r)
	default:
		s.proxy(w, r)
	}
}
