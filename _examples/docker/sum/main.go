// Command sum is the sample service of the Docker and Kubernetes examples:
// it answers role:math,cmd:sum with the sum of Left and Right.
//
// It is configured by the environment:
//
//	NANO_SERVER          the nano server, host:port (default nano-server:9999)
//	NANO_SERVICE_ADDRESS the host this instance is reached at (default: the
//	                     address its hostname resolves to, as in a container)
//	NANO_SERVICE_PORT    the port it listens on (default 8080)
//	NANO_TOKEN           the server's registration token, if it has one
//	NANO_TLS_CERT        PEM certificate to serve HTTPS with and to present
//	NANO_TLS_KEY         its key (the two are read again when they change)
//	NANO_TLS_CA          PEM bundle that signs the server's and peers'
//	                     certificates; with it, the server is reached over HTTPS
//	NANO_TLS_CLIENT_CERTS true: require from callers a certificate NANO_TLS_CA signed
//	NANO_HEALTH_PORT     also serve /healthz, /readyz and /metrics in plain
//	                     HTTP on this port (for probes without a certificate)
//
// It stops on SIGTERM or SIGINT: it deregisters, finishes the requests
// under way and exits with 0. "sum -check URL" exits with 0 if URL
// answers 200, for container health checks.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	nano "github.com/domWinter/go-nano"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-check" {
		os.Exit(check(os.Args[2]))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	host := env("NANO_SERVICE_ADDRESS", "")
	if host == "" {
		host = ownAddress()
	}
	opts := nano.ServiceOptions{
		Addr:   net.JoinHostPort(host, env("NANO_SERVICE_PORT", "8080")),
		Server: env("NANO_SERVER", "nano-server:9999"),
		Token:  os.Getenv("NANO_TOKEN"),
		Logger: log,
	}
	if err := configureTLS(&opts); err != nil {
		log.Error("sum: cannot start", "error", err)
		os.Exit(2)
	}
	svc, err := nano.NewServiceWithOptions(opts)
	if err != nil {
		log.Error("sum: cannot start", "error", err)
		os.Exit(2)
	}
	svc.Handle("role:math,cmd:sum", func(msg []byte) ([]byte, error) {
		var m struct{ Left, Right float64 }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, &nano.Error{Status: http.StatusBadRequest, Message: "Left and Right must be numbers"}
		}
		return json.Marshal(map[string]float64{"Result": m.Left + m.Right})
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	if port := os.Getenv("NANO_HEALTH_PORT"); port != "" {
		health := &http.Server{Addr: ":" + port, Handler: svc.HealthHandler(), ReadHeaderTimeout: 5 * time.Second}
		defer health.Close()
		go func() { served <- health.ListenAndServe() }()
	}
	go func() { served <- svc.ListenAndServe() }()
	select {
	case err := <-served:
		log.Error("sum: serving failed", "error", err)
		os.Exit(1)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Shutdown(sctx); err != nil {
		log.Warn("sum: shutdown cut short", "error", err)
	}
}

// ownAddress is the address this container is reached at by the others:
// what its hostname resolves to (Docker and Kubernetes write it in
// /etc/hosts), or the hostname itself.
func ownAddress() string {
	name, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	addrs, _ := net.LookupHost(name)
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && !ip.IsLoopback() {
			return a
		}
	}
	return name
}

// configureTLS sets the TLS options from NANO_TLS_CERT, NANO_TLS_KEY,
// NANO_TLS_CA and NANO_TLS_CLIENT_CERTS.
func configureTLS(opts *nano.ServiceOptions) error {
	cert, key, ca := os.Getenv("NANO_TLS_CERT"), os.Getenv("NANO_TLS_KEY"), os.Getenv("NANO_TLS_CA")
	if cert == "" && key == "" && ca == "" {
		return nil
	}
	files, err := nano.LoadTLSFiles(cert, key, ca)
	if err != nil {
		return err
	}
	if cert != "" {
		opts.TLS = files.ServerConfig(os.Getenv("NANO_TLS_CLIENT_CERTS") == "true")
	}
	if ca != "" {
		opts.ClientTLS = files.ClientConfig()
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func check(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sum -check:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "sum -check:", resp.Status)
		return 1
	}
	return 0
}
