// Command nano-server runs a nano server: the registry of patterns and
// the proxy that sends each message to a service matching its Pattern.
//
// It is configured by flags, each of which has an environment variable
// that sets its default (a flag given on the command line wins):
//
//	nano-server                                  # in-memory registry on :9999
//	NANO_REDIS_ADDR=redis:6379 nano-server       # registry in Redis
//	nano-server -redis 10.0.0.1:26379,10.0.0.2:26379 -redis-master mymaster   # Sentinel
//	nano-server -redis 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000              # Cluster
//	nano-server -tls-cert tls.crt -tls-key tls.key -tls-ca ca.crt \
//	    -tls-client-certs -identities identities.json -health-port 9998       # mutual TLS
//
// Run nano-server -h for every flag. An empty variable counts as unset.
// "nano-server -check URL" exits with 0 if URL answers 200: the health
// check of a container image that has no shell. It stops on SIGTERM or
// SIGINT: it stops accepting, lets the requests under way finish (at most
// -shutdown-timeout), and exits with status 0.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

func main() {
	if len(os.Args) == 3 && (os.Args[1] == "-check" || os.Args[1] == "--check") {
		os.Exit(check(os.Args[2]))
	}
	if len(os.Args) == 2 {
		if url, ok := strings.CutPrefix(strings.TrimPrefix(os.Args[1], "-"), "-check="); ok || strings.HasPrefix(os.Args[1], "-check=") {
			if !ok {
				url = strings.TrimPrefix(os.Args[1], "-check=")
			}
			os.Exit(check(url))
		}
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

// check is the health check of images without a shell or curl
// ("nano-server -check http://127.0.0.1:9999/readyz"): it exits with 0
// when url answers 200 within 2 seconds, 1 otherwise.
func check(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nano-server -check:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "nano-server -check:", resp.Status)
		return 1
	}
	return 0
}

// config is what the flags and the environment say.
type config struct {
	port, healthPort                       int
	host                                   string
	redisAddrs, redisMaster, redisPassword string
	redisDB                                int
	keyPrefix                              string
	originalKeys                           bool
	token, tokenFile                       string
	tlsCert, tlsKey, tlsCA, identitiesFile string
	tlsClientCerts                         bool
	tls, upstreamTLS                       *tls.Config
	tlsFiles                               *nano.TLSFiles
	identities                             nano.Identities
	identitiesStamp                        string
	ttl, resync                            time.Duration
	upstreamTimeout, registryTimeout       time.Duration
	readHeaderTimeout, readTimeout         time.Duration
	writeTimeout, idleTimeout              time.Duration
	shutdownDelay, shutdownTimeout         time.Duration
	maxBodyBytes                           int64
	maxHeaderBytes, maxConns, maxPatterns  int
	outliers                               nano.Outliers
	logLevel, logFormat                    string
}

// parse reads the flags of args, with defaults from the environment.
func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("nano-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var errs []error
	str := func(p *string, name, env, def, usage string) {
		if v := os.Getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ($"+env+")")
	}
	num := func(p *int, name, env string, def int, usage string) {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("$%s: %q is not a number", env, v))
			}
			def = n
		}
		fs.IntVar(p, name, def, usage+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		if v := os.Getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("$%s: %q is not a duration such as 30s", env, v))
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage+" ($"+env+")")
	}
	boolean := func(p *bool, name, env, usage string) {
		def := false
		if v := os.Getenv(env); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("$%s: %q is not true or false", env, v))
			}
			def = b
		}
		fs.BoolVar(p, name, def, usage+" ($"+env+")")
	}
	// Limits default to zero, which the library reads as its own default;
	// the help shows what that is.
	def := nano.ServerOptions{}.Defaults()
	_, defPort, _ := net.SplitHostPort(def.Addr)
	port, _ := strconv.Atoi(defPort)
	or := func(v any) string { return fmt.Sprintf("; 0 means %v", v) }
	num(&c.port, "port", "NANO_PORT", port, "port to listen on")
	num(&c.healthPort, "health-port", "NANO_HEALTH_PORT", 0, "also serve /healthz, /readyz and /metrics alone on this port, in plain HTTP, for probes and scrapers without a client certificate; 0 means not")
	str(&c.host, "host", "NANO_HOST", "", "address to listen on; empty means all interfaces")
	str(&c.redisAddrs, "redis", "NANO_REDIS_ADDR", "", "Redis host:port, or several separated by commas (Sentinel or Cluster); empty means the in-memory registry")
	str(&c.redisMaster, "redis-master", "NANO_REDIS_MASTER", "", "Sentinel master name; -redis then lists the sentinels")
	str(&c.redisPassword, "redis-password", "NANO_REDIS_PASSWORD", "", "Redis password")
	num(&c.redisDB, "redis-db", "NANO_REDIS_DB", 0, "Redis database number")
	str(&c.keyPrefix, "key-prefix", "NANO_KEY_PREFIX", "", "prefix of the registry's Redis keys; empty means "+def.KeyPrefix)
	boolean(&c.originalKeys, "original-keys", "NANO_ORIGINAL_KEYS", "also keep the original library's Redis keys, so that its servers and this one route each other's services during a rolling upgrade; needs -redis")
	str(&c.tlsCert, "tls-cert", "NANO_TLS_CERT", "", "PEM certificate (chain) to serve HTTPS with, read again when it changes; needs -tls-key")
	str(&c.tlsKey, "tls-key", "NANO_TLS_KEY", "", "PEM key of -tls-cert")
	str(&c.tlsCA, "tls-ca", "NANO_TLS_CA", "", "PEM bundle of the authorities that sign the certificates of TLS services and, with -tls-client-certs, of clients; empty means the system's; alone, the server serves plain HTTP and calls TLS services with it")
	boolean(&c.tlsClientCerts, "tls-client-certs", "NANO_TLS_CLIENT_CERTS", "require from every client a certificate signed by -tls-ca (mutual TLS)")
	str(&c.identitiesFile, "identities", "NANO_IDENTITIES", "", "JSON file mapping client certificate identities (URI or DNS SANs) to the patterns they may register, read again when it changes; needs -tls-client-certs")
	str(&c.tokenFile, "token-file", "NANO_TOKEN_FILE", "", "file holding the registration token (read once at start); $NANO_TOKEN gives the token itself")
	dur(&c.ttl, "ttl", "NANO_TTL", 0, "a registration lives this long unless renewed"+or(def.TTL)+"; at least "+nano.MinTTL.String())
	dur(&c.resync, "resync", "NANO_RESYNC_INTERVAL", 0, "check that Redis did not lose the registry (which is then read again)"+or(def.ResyncInterval)+", negative never")
	dur(&c.upstreamTimeout, "upstream-timeout", "NANO_UPSTREAM_TIMEOUT", 0, "bound of one proxied call, then 504"+or(def.UpstreamTimeout)+", negative none")
	dur(&c.registryTimeout, "registry-timeout", "NANO_REGISTRY_TIMEOUT", 0, "bound of each Redis call"+or(def.RegistryTimeout))
	dur(&c.readHeaderTimeout, "read-header-timeout", "NANO_READ_HEADER_TIMEOUT", 0, "time to read a request's headers"+or(def.ReadHeaderTimeout)+", negative none")
	dur(&c.readTimeout, "read-timeout", "NANO_READ_TIMEOUT", 0, "time to read a whole request"+or(def.ReadTimeout)+", negative none")
	dur(&c.writeTimeout, "write-timeout", "NANO_WRITE_TIMEOUT", 0, "time from a request's headers to the end of its answer; 0 means the upstream timeout plus 10s, negative none")
	dur(&c.idleTimeout, "idle-timeout", "NANO_IDLE_TIMEOUT", 0, "keep-alive connections idle longer are closed"+or(def.IdleTimeout)+", negative never")
	dur(&c.shutdownDelay, "shutdown-delay", "NANO_SHUTDOWN_DELAY", 0, "time to go on serving after SIGTERM before shutting down, while a load balancer stops sending new requests")
	dur(&c.shutdownTimeout, "shutdown-timeout", "NANO_SHUTDOWN_TIMEOUT", 25*time.Second, "time given to requests under way at shutdown")
	var maxBody int
	num(&maxBody, "max-body-bytes", "NANO_MAX_BODY_BYTES", 0, "larger message bodies get 413"+or(def.MaxBodyBytes)+", negative no limit")
	num(&c.maxHeaderBytes, "max-header-bytes", "NANO_MAX_HEADER_BYTES", 0, "larger request heads get 431, larger answer heads from services 502"+or(def.MaxHeaderBytes)+", negative no limit")
	num(&c.maxConns, "max-conns", "NANO_MAX_CONNS", 0, "connections held open at once; more wait"+or(def.MaxConns)+", negative no limit")
	num(&c.maxPatterns, "max-patterns", "NANO_MAX_PATTERNS", 0, "registrations of further new patterns get 507"+or(def.MaxPatterns)+", negative no limit")
	od := def.Outliers
	num(&c.outliers.MaxFailures, "eject-after", "NANO_EJECT_AFTER", 0, "failures in a row that eject an instance for a while"+or(od.MaxFailures)+", negative never ejects")
	dur(&c.outliers.EjectionTime, "ejection-time", "NANO_EJECTION_TIME", 0, "a first ejection lasts this long, each further one that much longer"+or(od.EjectionTime))
	dur(&c.outliers.MaxEjectionTime, "max-ejection-time", "NANO_MAX_EJECTION_TIME", 0, "bound of an ejection"+or(od.MaxEjectionTime))
	num(&c.outliers.MaxEjectedPercent, "max-ejected-percent", "NANO_MAX_EJECTED_PERCENT", 0, "share of a pattern's instances that may be ejected at once"+or(od.MaxEjectedPercent))
	str(&c.logLevel, "log-level", "NANO_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.logFormat, "log-format", "NANO_LOG_FORMAT", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	c.maxBodyBytes = int64(maxBody)
	c.token = os.Getenv("NANO_TOKEN")
	if c.tokenFile != "" && c.token != "" {
		errs = append(errs, errors.New("both $NANO_TOKEN and -token-file are set: give the token one way"))
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("-token-file: %v", err))
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" && err == nil {
			errs = append(errs, fmt.Errorf("-token-file: %s is empty", c.tokenFile))
		}
	}
	errs = append(errs, c.loadTLS())
	if c.port < 0 || c.port > 65535 {
		errs = append(errs, fmt.Errorf("-port: %d is not a port", c.port))
	}
	if c.healthPort < 0 || c.healthPort > 65535 || c.healthPort != 0 && c.healthPort == c.port {
		errs = append(errs, fmt.Errorf("-health-port: %d is not a port other than -port", c.healthPort))
	}
	if c.redisAddrs == "" {
		for _, f := range []struct {
			set  bool
			name string
		}{{c.redisMaster != "", "-redis-master"}, {c.redisPassword != "", "-redis-password"}, {c.redisDB != 0, "-redis-db"}} {
			if f.set {
				errs = append(errs, fmt.Errorf("%s needs -redis (for Sentinel, the sentinels' addresses); without it the registry is in memory", f.name))
			}
		}
	}
	if c.redisDB < 0 {
		errs = append(errs, fmt.Errorf("-redis-db: %d is not a database number", c.redisDB))
	}
	if c.shutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("-shutdown-delay: %v cannot be negative", c.shutdownDelay))
	}
	if c.shutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-shutdown-timeout: %v must be above 0", c.shutdownTimeout))
	}
	if strings.TrimSpace(c.redisAddrs) != c.redisAddrs || strings.Contains(c.redisAddrs, ",,") {
		errs = append(errs, fmt.Errorf("-redis: %q is not a list of host:port separated by commas", c.redisAddrs))
	}
	return c, errors.Join(errs...)
}

// loadTLS reads the TLS files and the identities the flags name.
func (c *config) loadTLS() error {
	switch {
	case c.tlsCert == "" && c.tlsKey == "" && (c.tlsClientCerts || c.identitiesFile != ""):
		return errors.New("-tls-client-certs and -identities need -tls-cert and -tls-key")
	case c.tlsCert == "" && c.tlsKey == "" && c.tlsCA == "":
		return nil
	case c.tlsClientCerts && c.tlsCA == "":
		return errors.New("-tls-client-certs needs -tls-ca, the bundle to check client certificates against")
	case c.identitiesFile != "" && !c.tlsClientCerts:
		return errors.New("-identities needs -tls-client-certs: identities come from verified client certificates")
	}
	files, err := nano.LoadTLSFiles(c.tlsCert, c.tlsKey, c.tlsCA)
	if err != nil {
		return fmt.Errorf("-tls-cert, -tls-key, -tls-ca: %w", err)
	}
	c.upstreamTLS, c.tlsFiles = files.ClientConfig(), files
	if c.tlsCert != "" {
		c.tls = files.ServerConfig(c.tlsClientCerts)
	}
	if c.identitiesFile != "" {
		c.identitiesStamp = fileStamp(c.identitiesFile) // before reading: a change made meanwhile is read again
		if c.identities, err = nano.LoadIdentities(c.identitiesFile); err != nil {
			return fmt.Errorf("-identities: %w", err)
		}
	}
	return nil
}

// watchTLS looks at the TLS files every interval until ctx ends, and logs
// when they stop loading (the server keeps the last good ones) and when
// they load again.
func watchTLS(ctx context.Context, files *nano.TLSFiles, log *slog.Logger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := ""
		if err := files.Check(); err != nil {
			now = err.Error()
		}
		switch {
		case now == last:
		case now != "":
			log.Error("nano-server: TLS files do not load; serving with the last good ones", "error", now)
		default:
			log.Info("nano-server: TLS files load again")
		}
		last = now
	}
}

// fileStamp is what tells that a file changed: its modification time and
// size, or why it cannot be read.
func fileStamp(file string) string {
	st, err := os.Stat(file)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(st.ModTime().UnixNano(), st.Size())
}

// watchIdentities reads the identities file again, every interval until
// ctx ends, when its stamp is not last any more (a ConfigMap's file is
// swapped whole), and
// gives the server what it holds; a file that does not load is logged and
// the server keeps the identities it had.
func watchIdentities(ctx context.Context, file, last string, srv *nano.Server, log *slog.Logger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := fileStamp(file)
		if now == last {
			continue
		}
		last = now
		ids, err := nano.LoadIdentities(file)
		if err == nil {
			err = srv.SetIdentities(ids)
		}
		if err != nil {
			log.Error("nano-server: the identities file does not load; keeping the previous identities", "file", file, "error", err)
			continue
		}
		log.Info("nano-server: identities read again", "file", file, "identities", len(ids))
	}
}

// options turns the configuration into the server's options.
func (c config) options(log *slog.Logger) nano.ServerOptions {
	opts := nano.ServerOptions{
		Addr:              net.JoinHostPort(c.host, strconv.Itoa(c.port)),
		KeyPrefix:         c.keyPrefix,
		OriginalKeys:      c.originalKeys,
		Token:             c.token,
		MaxBodyBytes:      c.maxBodyBytes,
		MaxHeaderBytes:    c.maxHeaderBytes,
		MaxConns:          c.maxConns,
		MaxPatterns:       c.maxPatterns,
		Outliers:          c.outliers,
		ReadHeaderTimeout: c.readHeaderTimeout,
		ReadTimeout:       c.readTimeout,
		WriteTimeout:      c.writeTimeout,
		IdleTimeout:       c.idleTimeout,
		UpstreamTimeout:   c.upstreamTimeout,
		RegistryTimeout:   c.registryTimeout,
		TTL:               c.ttl,
		ResyncInterval:    c.resync,
		TLS:               c.tls,
		UpstreamTLS:       c.upstreamTLS,
		Identities:        c.identities,
		Logger:            log,
	}
	if c.redisAddrs != "" {
		opts.Redis = &redis.UniversalOptions{
			Addrs:      strings.Split(c.redisAddrs, ","),
			MasterName: c.redisMaster,
			Password:   c.redisPassword,
			DB:         c.redisDB,
		}
	}
	return opts
}

// logger builds the logger the configuration asks for.
func (c config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not debug, info, warn or error", c.logLevel)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", c.logFormat)
}

// run starts the server and serves until SIGTERM or SIGINT; it returns
// the exit status.
func run(args []string, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nano-server:", err)
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "nano-server:", err)
		return 2
	}
	opts := c.options(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := nano.NewServerWithOptions(opts)
	if errors.Is(err, nano.ErrInvalidOptions) {
		fmt.Fprintln(stderr, "nano-server:", err)
		return 2
	}
	if err != nil {
		log.Error("nano-server: cannot start", "error", err)
		return 1
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		log.Error("nano-server: cannot listen", "addr", opts.Addr, "error", err)
		srv.Shutdown(context.Background())
		return 1
	}
	// Serve logs the address and the registry.
	if c.token == "" && c.identities == nil {
		log.Warn("nano-server: no token and no identities: anyone who can reach this server can register patterns; set NANO_TOKEN, or -identities with mutual TLS, on a network that is not trusted")
	}

	served := make(chan error, 1)
	if c.healthPort != 0 {
		addr := net.JoinHostPort(c.host, strconv.Itoa(c.healthPort))
		hl, err := net.Listen("tcp", addr)
		if err != nil {
			log.Error("nano-server: cannot listen for health", "addr", addr, "error", err)
			srv.Shutdown(context.Background())
			l.Close()
			return 1
		}
		health := &http.Server{Handler: srv.HealthHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		defer health.Close()
		go func() {
			if err := health.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				served <- err
			}
		}()
		log.Info("nano-server: health listening", "addr", hl.Addr().String())
	}
	if c.tlsFiles != nil {
		go watchTLS(ctx, c.tlsFiles, log, time.Second)
	}
	if c.identitiesFile != "" {
		go watchIdentities(ctx, c.identitiesFile, c.identitiesStamp, srv, log, time.Second)
	}
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		log.Error("nano-server: serving failed", "error", err)
		srv.Shutdown(context.Background())
		return 1
	case <-ctx.Done():
	}
	stop() // a second signal ends the process at once
	if c.shutdownDelay > 0 {
		srv.Drain() // /readyz says 503 while load balancers stop sending
		log.Info("nano-server: stopping soon", "delay", c.shutdownDelay.String())
		time.Sleep(c.shutdownDelay)
	}
	log.Info("nano-server: shutting down", "timeout", c.shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("nano-server: requests cut short at shutdown", "error", err)
	}
	log.Info("nano-server: stopped")
	return 0
}
