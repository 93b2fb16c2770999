// Command loadtest measures go-nano on loopback: it starts a nano server
// (embedded registry), a sum service, a service whose handler calls the sum
// service with Act, and two proxies on net/http's server in front of the
// sum service (httputil's, and a bare handler relaying with the library's
// pool), then drives five paths in turn with a fixed number of keep-alive
// connections for a fixed time:
//
//	direct    POST to the sum service itself
//	revproxy  POST to net/http's httputil.ReverseProxy, which proxies to the sum service
//	bare      POST to a net/http handler that relays the body to the sum service with the library's pool
//	server    POST to the nano server, which proxies to the sum service
//	act       POST to the Act-calling service, whose handler calls sum with Act
//
// For each path it prints requests per second, the 50th and 99th
// percentile latency, the ratio of its throughput to the direct path's in
// the same round, and how many TCP connections each listener accepted per
// 1 000 requests after the warm-up. With -rounds above 1 it prints the
// median of each figure too. It stops by itself and leaves nothing running.
//
//	go run ./_examples/loadtest -d 10s -c 32 -rounds 3
//
// With -serve it starts the same system, prints one line per path
// ("name URL BODY") and serves until SIGINT or SIGTERM, for an outside load
// generator such as wrk (bench/wrk.sh drives it). On SIGUSR1, and once more
// when it stops, it prints how many connections each listener has accepted
// so far, as one line: "accepted act=N bare=N revproxy=N server=N sum=N".
//
// With -tls DIR every hop of the direct, server and act paths speaks TLS
// (the revproxy and bare paths are left out): the loadtest makes a
// certificate authority and a certificate for 127.0.0.1 and localhost,
// which the server and the services serve with and check each other's
// against, and writes them to DIR as ca.crt, tls.crt and tls.key, for a
// TLS proxy measured beside it (bench/wrk.sh with TLS=1).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	nano "github.com/domWinter/go-nano"
	"github.com/domWinter/go-nano/internal/pool"
)

func main() {
	d := flag.Duration("d", 10*time.Second, "measured time per path and round")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time before each measurement")
	conns := flag.Int("c", 32, "concurrent connections")
	rounds := flag.Int("rounds", 1, "rounds over the paths")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	transport := flag.String("transport", "pool", "what carries the server's and the services' calls: pool (the library's default) or std (a tuned http.Transport), to compare the two")
	tlsDir := flag.String("tls", "", "serve and call over TLS, with certificates made at start and written to this folder; only the direct, server and act paths")
	serve := flag.Bool("serve", false, "start the system, print one line per path (name, URL, body) and serve until interrupted, for an outside load generator such as wrk")
	flag.Parse()
	switch *transport {
	case "pool":
	case "std":
		calls = &http.Transport{
			MaxIdleConns:           1024,
			MaxIdleConnsPerHost:    256,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 1 << 20,
			DisableCompression:     true,
		}
	default:
		fmt.Fprintln(os.Stderr, "loadtest: -transport is pool or std")
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *tlsDir != "" {
		var err error
		if serving, calling, err = makeCerts(*tlsDir); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest: -tls:", err)
			os.Exit(1)
		}
	}
	if err := run(*d, *warmup, *conns, *rounds, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// calls carries the calls of the server and the services; nil means the
// library's default.
var calls http.RoundTripper

// serving and calling are the TLS configurations of every hop with -tls:
// to serve with, and to call with. Nil means plain HTTP.
var serving, calling *tls.Config

// scheme is the scheme of the paths' URLs.
func scheme() string {
	if serving != nil {
		return "https://"
	}
	return "http://"
}

// path is one way to reach the sum handler.
type path struct {
	name, url, body string
}

// result is one measurement of a path.
type result struct {
	rps           float64
	p50, p99      time.Duration
	errors        int
	newConnsPer1k map[string]float64 // listener -> accepted connections per 1 000 requests
}

func run(d, warmup time.Duration, conns, rounds int, serve bool) error {
	quiet := slog.New(slog.DiscardHandler)
	listeners := map[string]*countingListener{}
	listen := func(name string) (*countingListener, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		cl := &countingListener{Listener: l}
		listeners[name] = cl
		return cl, nil
	}

	server, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: quiet, Transport: calls, TLS: serving, UpstreamTLS: calling})
	if err != nil {
		return err
	}
	sl, err := listen("server")
	if err != nil {
		return err
	}
	go server.Serve(sl)
	serverAddr := sl.Addr().String()

	sum, sumAddr, err := startService(serverAddr, quiet, listen, "sum", "role:math,cmd:sum", func(msg []byte) ([]byte, error) {
		var m struct{ Left, Right int }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int{"Result": m.Left + m.Right})
	})
	if err != nil {
		return err
	}
	var actor *nano.Service
	sumMsg := []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)
	actor, actAddr, err := startService(serverAddr, quiet, listen, "act", "role:bench,cmd:act", func([]byte) ([]byte, error) {
		return actor.Act(sumMsg, "role:math,cmd:sum")
	})
	if err != nil {
		return err
	}
	var revproxy, bare *http.Server
	var revproxyAddr, bareAddr string
	if serving == nil {
		if revproxy, revproxyAddr, err = startRevproxy(listen, sumAddr); err != nil {
			return err
		}
		if bare, bareAddr, err = startBare(listen, sumAddr); err != nil {
			return err
		}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if serving == nil {
			bare.Shutdown(ctx)
			revproxy.Shutdown(ctx)
		}
		actor.Shutdown(ctx)
		sum.Shutdown(ctx)
		server.Shutdown(ctx)
	}()

	paths := []path{
		{"direct", scheme() + sumAddr + "/", string(sumMsg)},
		{"revproxy", "http://" + revproxyAddr + "/", string(sumMsg)},
		{"bare", "http://" + bareAddr + "/", string(sumMsg)},
		{"server", scheme() + serverAddr + "/", string(sumMsg)},
		{"act", scheme() + actAddr + "/", `{"Pattern":"role:bench,cmd:act"}`},
	}
	if serving != nil {
		paths = slices.DeleteFunc(paths, func(p path) bool { return p.name == "revproxy" || p.name == "bare" })
	}
	for _, p := range paths {
		if err := waitOK(p); err != nil {
			return err
		}
	}

	if serve {
		for _, p := range paths {
			fmt.Printf("%-8s %s  %s\n", p.name, p.url, p.body)
		}
		serveUntilStopped(listeners)
		return nil
	}
	fmt.Printf("loadtest: %d connections, %v per path (after %v warm-up), %d round(s); %s, %d CPUs\n",
		conns, d, warmup, rounds, runtime.Version(), runtime.NumCPU())
	all := make(map[string][]result)
	ratios := make(map[string][]float64)
	for r := 1; r <= rounds; r++ {
		fmt.Printf("\nround %d\n", r)
		printHeader()
		var direct result
		for _, p := range paths {
			res := measure(p, d, warmup, conns, listeners)
			if p.name == "direct" {
				direct = res
			}
			ratio := res.rps / direct.rps
			all[p.name] = append(all[p.name], res)
			ratios[p.name] = append(ratios[p.name], ratio)
			printRow(p.name, res, ratio)
		}
	}
	if rounds > 1 {
		fmt.Printf("\nmedian of %d rounds\n", rounds)
		printHeader()
		for _, p := range paths {
			printRow(p.name, medianResult(all[p.name]), median(ratios[p.name]))
		}
	}
	return nil
}

// startService serves one handler on a counted loopback listener.
func startService(serverAddr string, log *slog.Logger, listen func(string) (*countingListener, error), name, pattern string, h nano.HandlerFunc) (*nano.Service, string, error) {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: serverAddr, Logger: log, Transport: calls, TLS: serving, ClientTLS: calling})
	if err != nil {
		return nil, "", err
	}
	if err := svc.Handle(pattern, h); err != nil {
		return nil, "", err
	}
	l, err := listen(name)
	if err != nil {
		return nil, "", err
	}
	go svc.Serve(l)
	return svc, l.Addr().String(), nil
}

// startRevproxy serves Go's standard reverse proxy in front of the sum
// service, with a Transport that keeps up to 256 idle connections to it:
// what one proxy hop costs when written with the standard library alone.
func startRevproxy(listen func(string) (*countingListener, error), upstream string) (*http.Server, string, error) {
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	proxy.Transport = &http.Transport{
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	l, err := listen("revproxy")
	if err != nil {
		return nil, "", err
	}
	go srv.Serve(l)
	return srv, l.Addr().String(), nil
}

// startBare serves the floor of a proxy hop on net/http's server: a
// handler that reads the request body whole, sends it to the sum service
// with the library's pool and copies the answer's status, header and body
// back, answering 502 when the pool fails. There is no routing, no
// parsing of the message and no timeout but the request's context.
func startBare(listen func(string) (*countingListener, error), upstream string) (*http.Server, string, error) {
	target := "http://" + upstream + "/"
	transport := &pool.Transport{}
	relay := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		out.Header = r.Header
		resp, err := transport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		maps.Copy(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}
	srv := &http.Server{Handler: http.HandlerFunc(relay), ReadHeaderTimeout: 5 * time.Second}
	l, err := listen("bare")
	if err != nil {
		return nil, "", err
	}
	go srv.Serve(l)
	return srv, l.Addr().String(), nil
}

// serveUntilStopped blocks until SIGINT or SIGTERM. It prints the accepted
// connection counts on each report signal (SIGUSR1 where there is one) and
// once more before it returns.
func serveUntilStopped(listeners map[string]*countingListener) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, append([]os.Signal{os.Interrupt, syscall.SIGTERM}, reportSignals...)...)
	defer signal.Stop(sig)
	for s := range sig {
		printAccepted(listeners)
		if !slices.Contains(reportSignals, s) {
			return
		}
	}
}

// printAccepted prints one line with the connections each listener has
// accepted so far, listeners sorted by name.
func printAccepted(listeners map[string]*countingListener) {
	counts := acceptedBy(listeners)
	var b strings.Builder
	b.WriteString("accepted")
	for _, name := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(&b, " %s=%d", name, counts[name])
	}
	fmt.Println(b.String())
}

// waitOK waits until a path answers 200: services register in the
// background.
func waitOK(p path) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: calling}}).Post(p.url, "application/json", strings.NewReader(p.body))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("path %s does not answer", p.name)
}

// measure drives a path with conns keep-alive connections: warm-up first,
// then d measured.
func measure(p path, d, warmup time.Duration, conns int, listeners map[string]*countingListener) result {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex // guards latencies and errs
		latencies []time.Duration
		errs      int
	)
	body := []byte(p.body)
	for range conns {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true, TLSClientConfig: calling}}
			defer client.CloseIdleConnections()
			mine := make([]time.Duration, 0, 1<<16)
			bad := 0
			for !stop.Load() {
				start := time.Now()
				resp, err := client.Post(p.url, "application/json", strings.NewReader(string(body)))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if !measuring.Load() {
					continue
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					bad++
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			errs += bad
			mu.Unlock()
		})
	}
	time.Sleep(warmup)
	before := acceptedBy(listeners)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(d)
	measuring.Store(false)
	elapsed := time.Since(start)
	after := acceptedBy(listeners)
	stop.Store(true)
	wg.Wait()

	slices.Sort(latencies)
	res := result{rps: float64(len(latencies)) / elapsed.Seconds(), errors: errs, newConnsPer1k: map[string]float64{}}
	if n := len(latencies); n > 0 {
		res.p50, res.p99 = latencies[n/2], latencies[n*99/100]
		for name := range listeners {
			res.newConnsPer1k[name] = float64(after[name]-before[name]) * 1000 / float64(n)
		}
	}
	return res
}

// counted names the listeners whose new connections the tables show.
var counted = []string{"server", "sum", "act", "revproxy", "bare"}

func printHeader() {
	fmt.Printf("%-8s %10s %10s %10s %9s %7s  %s\n", "path", "req/s", "p50", "p99", "vs direct", "errors", "new connections per 1000 requests ("+strings.Join(counted, "/")+")")
}

func printRow(name string, r result, ratio float64) {
	per1k := make([]string, len(counted))
	for i, l := range counted {
		per1k[i] = fmt.Sprintf("%.1f", r.newConnsPer1k[l])
	}
	fmt.Printf("%-8s %10.0f %10v %10v %8.2fx %7d  %s\n", name, r.rps,
		r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), ratio, r.errors,
		strings.Join(per1k, "/"))
}

// medianResult takes the median of each figure over the rounds.
func medianResult(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return median(v)
	}
	m := result{
		rps:           pick(func(r result) float64 { return r.rps }),
		p50:           time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:           time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		errors:        int(pick(func(r result) float64 { return float64(r.errors) })),
		newConnsPer1k: map[string]float64{},
	}
	for _, name := range counted {
		m.newConnsPer1k[name] = pick(func(r result) float64 { return r.newConnsPer1k[name] })
	}
	return m
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func acceptedBy(listeners map[string]*countingListener) map[string]int64 {
	m := make(map[string]int64, len(listeners))
	for name, l := range listeners {
		m[name] = l.accepted.Load()
	}
	return m
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}
