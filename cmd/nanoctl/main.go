// Command nanoctl looks at and talks to a nano server from a terminal:
//
//	nanoctl ls                      patterns, their instances, expiry, and whether the server ejected them
//	nanoctl call PATTERN [JSON]     sends a message through the server; prints status, time and answer
//	nanoctl resolve PATTERN         the registered pattern a message with PATTERN goes to, and its instances
//	nanoctl health                  the server's /healthz and /readyz
//
// The server is -server, or $NANO_SERVER_ADDRESS, or 127.0.0.1:9999; a
// host without a port means port 9999. $NANO_TOKEN, when set, is sent as
// the bearer token (GET /services needs it on a server that has one).
// With -tls-ca (or $NANO_TLS_CA), the server is reached over HTTPS and its
// certificate checked against that bundle; -tls-cert and -tls-key
// ($NANO_TLS_CERT, $NANO_TLS_KEY) give the certificate to present to a
// server that requires one.
// Output is a table, or JSON with -json. The exit status is 0 when the
// server answered 2xx (for health: ready), 1 when it did not or could not
// be reached, 2 for a wrong command line.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// cli is one run of the command.
type cli struct {
	server  string
	scheme  string // "http" or "https"
	token   string
	json    bool
	client  *http.Client
	out     io.Writer
	errOut  io.Writer
	started time.Time
}

// errUsage is a wrong command line.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nanoctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("NANO_SERVER_ADDRESS")
	if def == "" {
		def = "127.0.0.1:9999"
	}
	server := fs.String("server", def, "the nano server, host[:port] ($NANO_SERVER_ADDRESS)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "bound of each request")
	caFile := fs.String("tls-ca", os.Getenv("NANO_TLS_CA"), "PEM bundle that signs the server's certificate: reach it over HTTPS ($NANO_TLS_CA)")
	certFile := fs.String("tls-cert", os.Getenv("NANO_TLS_CERT"), "PEM certificate to present to a server that requires one ($NANO_TLS_CERT)")
	keyFile := fs.String("tls-key", os.Getenv("NANO_TLS_KEY"), "PEM key of -tls-cert ($NANO_TLS_KEY)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: nanoctl [flags] command [arguments]

commands:
  ls                     patterns, instances, expiry and state
  call PATTERN [JSON]    send a message through the server (JSON defaults to {})
  resolve PATTERN        where a message with PATTERN goes
  health                 the server's /healthz and /readyz

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	addr, err := serverAddr(*server)
	if err != nil {
		fmt.Fprintln(stderr, "nanoctl: -server:", err)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "nanoctl: -timeout must be above 0")
		return 2
	}
	tlsConfig, err := loadTLS(*caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "nanoctl:", err)
		return 2
	}
	c := &cli{
		server: addr,
		scheme: "http",
		token:  os.Getenv("NANO_TOKEN"),
		json:   *asJSON,
		client: &http.Client{Timeout: *timeout},
		out:    stdout,
		errOut: stderr,
	}
	if tlsConfig != nil {
		c.scheme = "https"
		c.client.Transport = &http.Transport{TLSClientConfig: tlsConfig}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	switch cmd, params := rest[0], rest[1:]; {
	case cmd == "ls" && len(params) == 0:
		err = c.ls()
	case cmd == "call" && (len(params) == 1 || len(params) == 2):
		msg := "{}"
		if len(params) == 2 {
			msg = params[1]
		}
		err = c.call(params[0], msg)
	case cmd == "resolve" && len(params) == 1:
		err = c.resolve(params[0])
	case cmd == "health" && len(params) == 0:
		err = c.health()
	default:
		fmt.Fprintf(stderr, "nanoctl: %q: unknown command or wrong arguments\n\n", strings.Join(rest, " "))
		fs.Usage()
		return 2
	}
	switch {
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "nanoctl:", err)
		return 1
	}
	return 0
}

// loadTLS reads the TLS files of the flags; nil without any.
func loadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if caFile == "" {
		return nil, errors.New("-tls-cert and -tls-key need -tls-ca, the bundle that signs the server's certificate")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %v", err)
	}
	c := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if !c.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca: %s holds no PEM certificate", caFile)
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert, -tls-key: %v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// serverAddr reads host[:port], 9999 when there is no port.
func serverAddr(s string) (string, error) {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s, nil
	}
	if s == "" || strings.ContainsAny(s, "/ ") {
		return "", fmt.Errorf("%q is not host[:port]", s)
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "9999"), nil
}

// get sends GET path and returns the status and body.
func (c *cli) get(path string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, c.scheme+"://"+c.server+path, nil)
	if err != nil {
		return 0, nil, err
	}
	return c.do(req)
}

func (c *cli) do(req *http.Request) (int, []byte, error) {
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.started = time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// failed is the error of an answer that is not 2xx: its status and the
// server's message.
func failed(status int, body []byte) error {
	var e struct{ Error string }
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return fmt.Errorf("%d %s: %s", status, http.StatusText(status), msg)
}

// instance is an instance as /services and /resolve give it.
type instance struct {
	ServiceAddress string
	TLS            bool `json:",omitempty"`
	Expires        time.Time
	Permanent      bool `json:",omitempty"`
	Ejected        bool `json:",omitempty"`
}

// where is the instance's address as the table shows it: after
// "https://" when it serves TLS.
func (in instance) where() string {
	if in.TLS {
		return "https://" + in.ServiceAddress
	}
	return in.ServiceAddress
}

// fetch sends GET path and returns the body of its 200 answer; with
// -json it prints the body instead and returns nil.
func (c *cli) fetch(path string) ([]byte, error) {
	status, body, err := c.get(path)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, failed(status, body)
	}
	if c.json {
		return nil, c.printJSON(body)
	}
	return body, nil
}

// ls prints GET /services.
func (c *cli) ls() error {
	body, err := c.fetch("/services")
	if err != nil || body == nil {
		return err
	}
	var l struct {
		Patterns []struct {
			Pattern   string
			Instances []instance
		}
		Ready bool
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return fmt.Errorf("GET /services: %v", err)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PATTERN\tINSTANCE\tEXPIRES\tSTATE")
	now := time.Now()
	for _, p := range l.Patterns {
		for _, in := range p.Instances {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Pattern, in.where(), expiry(in, now), state(in))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !l.Ready {
		fmt.Fprintln(c.out, "(the server cannot reach its registry: this is its last copy)")
	}
	return nil
}

func expiry(in instance, now time.Time) string {
	if in.Permanent {
		return "never"
	}
	return "in " + in.Expires.Sub(now).Round(time.Second).String()
}

func state(in instance) string {
	if in.Ejected {
		return "ejected"
	}
	return "ready"
}

// call sends msg, with its Pattern set to pattern, through the server.
func (c *cli) call(pattern, msg string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(msg), &m); err != nil || m == nil {
		fmt.Fprintf(c.errOut, "nanoctl: the message %q is not a JSON object\n", msg)
		return errUsage
	}
	p, _ := json.Marshal(pattern)
	m["Pattern"] = p
	body, _ := json.Marshal(m)
	req, err := http.NewRequest(http.MethodPost, c.scheme+"://"+c.server+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	status, answer, err := c.do(req)
	took := time.Since(c.started)
	if err != nil {
		return err
	}
	if c.json {
		out := map[string]any{"status": status, "ms": float64(took.Microseconds()) / 1000}
		if json.Valid(answer) {
			out["answer"] = json.RawMessage(answer)
		} else {
			out["answer"] = string(answer)
		}
		b, _ := json.Marshal(out)
		fmt.Fprintln(c.out, string(b))
	} else {
		fmt.Fprintf(c.out, "%d %s in %v\n%s\n", status, http.StatusText(status), took.Round(10*time.Microsecond), bytes.TrimSpace(answer))
	}
	if status < 200 || status > 299 {
		return fmt.Errorf("the call failed with %d", status)
	}
	return nil
}

// resolve prints GET /resolve.
func (c *cli) resolve(pattern string) error {
	body, err := c.fetch("/resolve?pattern=" + url.QueryEscape(pattern))
	if err != nil || body == nil {
		return err
	}
	var r struct {
		Pattern   string
		Instances []instance
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("GET /resolve: %v", err)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PATTERN\tINSTANCE\tEXPIRES")
	now := time.Now()
	for _, in := range r.Instances {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.Pattern, in.where(), expiry(in, now))
	}
	return w.Flush()
}

// health prints /healthz and /readyz; it fails unless both answer 200.
func (c *cli) health() error {
	type check struct {
		Path    string `json:"path"`
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	var checks []check
	ok := true
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body, err := c.get(path)
		if err != nil {
			return err
		}
		msg := strings.TrimSpace(string(body))
		var v struct{ Status, Error string }
		if json.Unmarshal(body, &v) == nil {
			msg = v.Status + v.Error
		}
		checks = append(checks, check{path, status, msg})
		ok = ok && status == http.StatusOK
	}
	if c.json {
		b, _ := json.Marshal(checks)
		fmt.Fprintln(c.out, string(b))
	} else {
		w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CHECK\tSTATUS\tMESSAGE")
		for _, ch := range checks {
			fmt.Fprintf(w, "%s\t%d\t%s\n", ch.Path, ch.Status, ch.Message)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if !ok {
		return errors.New("the server is not ready")
	}
	return nil
}

// printJSON prints a JSON answer indented.
func (c *cli) printJSON(body []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, body, "", "  "); err != nil {
		return err
	}
	_, err := fmt.Fprintln(c.out, b.String())
	return err
}
