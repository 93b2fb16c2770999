// Command fleet measures what a fleet of nano servers sharing one Redis
// costs at steady state. For each number of registrations N and of
// servers S it asks for, it starts a redis-server of its own (on a free
// loopback port, in a temporary directory, without persistence), S
// servers in this process (each with its own Redis connections and
// mirror), and a second process that registers N instances, spread over
// the servers, and renews each every third of the TTL, as services do.
// Once every server holds all N, it measures for -d:
//
//	redis     Redis's CPU (user and system, from INFO) as a share of one core
//	cmds/s    commands Redis processed per second
//	out       bytes per second Redis sent
//	server    this process's CPU per server, as a share of one core
//	heap      live heap per server after a GC, in MB
//	mem/reg   Redis's memory (used_memory) per registration
//	reg p99   time from a new registration's answer to the moment every
//	          server's mirror holds it (probes made during the window)
//	dereg p99 the same for a deregistration
//
// and prints one line per (N, S). It stops by itself and leaves nothing
// running.
//
//	go run ./_examples/fleet -n 1000,10000,100000 -s 1,5,20 -d 20s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "renew" {
		os.Exit(renewer(os.Args[2:]))
	}
	go stopOnSignal()
	ns := flag.String("n", "1000,10000", "numbers of registrations, comma-separated")
	ss := flag.String("s", "1,5", "numbers of servers, comma-separated")
	d := flag.Duration("d", 10*time.Second, "measured time per configuration")
	ttl := flag.Duration("ttl", 30*time.Second, "the servers' TTL; each registration is renewed every third of it")
	probes := flag.Duration("probe-every", 100*time.Millisecond, "interval between propagation probes during the measurement")
	flag.Parse()
	var configs [][2]int
	for _, n := range numbers(*ns) {
		for _, s := range numbers(*ss) {
			configs = append(configs, [2]int{n, s})
		}
	}
	if len(configs) == 0 || *d <= 0 || *ttl < time.Second {
		fmt.Fprintln(os.Stderr, "fleet: give -n and -s as positive numbers, -d above 0 and -ttl of 1s or more")
		os.Exit(2)
	}
	fmt.Printf("fleet: GOMAXPROCS=%d, TTL %v, %v per configuration\n", runtime.GOMAXPROCS(0), *ttl, *d)
	fmt.Printf("%8s %3s %8s %9s %9s %8s %8s %8s %9s %9s\n", "N", "S", "redis", "cmds/s", "out", "server", "heap", "mem/reg", "reg p99", "dereg p99")
	for _, c := range configs {
		r, err := measure(c[0], c[1], *ttl, *d, *probes)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet: N=%d S=%d: %v\n", c[0], c[1], err)
			os.Exit(1)
		}
		fmt.Printf("%8d %3d %7.1f%% %9.0f %7.0fkB %7.1f%% %6.1fMB %7.0fB %7.1fms %7.1fms\n",
			c[0], c[1], r.redisCPU*100, r.cmds, r.out/1000, r.serverCPU*100, r.heap/1e6, r.mem/float64(c[0]), ms(r.reg), ms(r.dereg))
	}
}

// The processes this one started, stopped on SIGINT or SIGTERM too.
var (
	childrenMu sync.Mutex
	children   = map[*exec.Cmd]bool{}
)

// started records a child process; stopped forgets it.
func started(c *exec.Cmd) {
	childrenMu.Lock()
	children[c] = true
	childrenMu.Unlock()
}

func stopped(c *exec.Cmd) {
	childrenMu.Lock()
	delete(children, c)
	childrenMu.Unlock()
}

// stopOnSignal kills the children and exits on SIGINT or SIGTERM, so that
// no redis-server or renewer outlives an interrupted run.
func stopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	childrenMu.Lock()
	for c := range children {
		c.Process.Kill()
		c.Wait()
	}
	os.Exit(1)
}

// numbers reads a comma-separated list of positive numbers.
func numbers(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// result is what one configuration measured.
type result struct {
	redisCPU, cmds, out float64 // per second
	serverCPU, heap     float64 // per server
	mem                 float64 // Redis's used_memory
	reg, dereg          time.Duration
}

// measure runs one configuration.
func measure(n, s int, ttl, d, probeEvery time.Duration) (result, error) {
	var res result
	rs, err := startRedis()
	if err != nil {
		return res, err
	}
	defer rs.stop()
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer rdb.Close()

	watch := newWatcher()
	var addrs []string
	var servers []*nano.Server
	defer func() {
		for _, srv := range servers {
			srv.Shutdown(context.Background())
		}
	}()
	for i := range s {
		srv, err := nano.NewServerWithOptions(nano.ServerOptions{
			Addr:        "127.0.0.1:0",
			Redis:       &redis.UniversalOptions{Addrs: []string{rs.addr}},
			TTL:         ttl,
			MaxPatterns: -1, // the load and the probes, however many
			Logger:      slog.New(watch.handler(i)),
		})
		if err != nil {
			return res, err
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		go srv.Serve(l)
		servers = append(servers, srv)
		addrs = append(addrs, l.Addr().String())
	}

	// The renewer registers every instance, then renews them.
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.Command(self, "renew", strconv.Itoa(n), ttl.String(), strings.Join(addrs, ","))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	started(cmd)
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		stopped(cmd)
	}()
	loaded := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "loaded" {
				loaded <- nil
			}
		}
		loaded <- errors.New("the renewer stopped")
	}()
	select {
	case err := <-loaded:
		if err != nil {
			return res, err
		}
	case <-time.After(10 * time.Minute):
		return res, errors.New("the renewer did not load its registrations within 10 minutes")
	}
	// Every mirror holds all N once the events are applied.
	deadline := time.Now().Add(time.Minute)
	for !watch.allHold(s, n) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the mirrors hold %v of %d registrations after a minute", watch.counts(s), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the load's backlog drain

	before, err := redisStats(rdb)
	if err != nil {
		return res, err
	}
	cpu0 := processCPU()
	start := time.Now()
	var reg, dereg []time.Duration
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; time.Since(start) < d; i++ {
		p, addr := fmt.Sprintf("probe:%d", i), fmt.Sprintf("127.0.0.2:%d", 1+i%60000)
		body := fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":%q}`, p, addr)
		at := addrs[rand.IntN(len(addrs))]
		r, err := watch.time(p, "registered", s, func() error { return post(client, "http://"+at+"/register", body) })
		if err != nil {
			return res, err
		}
		reg = append(reg, r)
		r, err = watch.time(p, "deregistered", s, func() error { return post(client, "http://"+at+"/deregister", body) })
		if err != nil {
			return res, err
		}
		dereg = append(dereg, r)
		time.Sleep(probeEvery)
	}
	elapsed := time.Since(start).Seconds()
	cpu := processCPU() - cpu0
	after, err := redisStats(rdb)
	if err != nil {
		return res, err
	}
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)

	res.redisCPU = (after.cpu - before.cpu) / elapsed
	res.cmds = (after.cmds - before.cmds) / elapsed
	res.out = (after.out - before.out) / elapsed
	res.serverCPU = cpu.Seconds() / elapsed / float64(s)
	res.heap = float64(mem.HeapAlloc) / float64(s)
	res.mem = after.mem
	res.reg, res.dereg = p99(reg), p99(dereg)
	return res, nil
}

// post sends body and fails unless the answer is 200.
func post(c *http.Client, url, body string) error {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return nil
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*99+99)/100-1]
}

// processCPU is the CPU time this process used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stats are Redis's counters.
type stats struct{ cpu, cmds, out, mem float64 }

func redisStats(rdb *redis.Client) (stats, error) {
	// go-redis v8's Info sends only its first section.
	text, err := rdb.Do(context.Background(), "INFO", "cpu", "stats", "memory").Text()
	if err != nil {
		return stats{}, err
	}
	var s stats
	for _, line := range strings.Split(text, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		f, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "used_cpu_user", "used_cpu_sys":
			s.cpu += f
		case "total_commands_processed":
			s.cmds = f
		case "total_net_output_bytes":
			s.out = f
		case "used_memory":
			s.mem = f
		}
	}
	return s, nil
}

// watcher learns from the servers' logs when a registration reached
// each server's mirror: a server logs "nano: service registered" (and
// "deregistered") when its mirror changes, whether by a request of its
// own or by an event from another server.
type watcher struct {
	mu      sync.Mutex
	held    []atomic.Int64              // by server: registrations of the load in its mirror
	waiting map[string]chan struct{}    // probe pattern + " " + what -> a receive per server
	seen    map[string]map[int]struct{} // the same, servers that saw it
}

func newWatcher() *watcher {
	return &watcher{held: make([]atomic.Int64, 64), waiting: map[string]chan struct{}{}, seen: map[string]map[int]struct{}{}}
}

func (w *watcher) allHold(s, n int) bool {
	for i := range s {
		if w.held[i].Load() < int64(n) {
			return false
		}
	}
	return true
}

func (w *watcher) counts(s int) []int64 {
	out := make([]int64, s)
	for i := range s {
		out[i] = w.held[i].Load()
	}
	return out
}

// time runs do and returns the time from its return to the moment s
// servers logged what for the pattern p.
func (w *watcher) time(p, what string, s int, do func() error) (time.Duration, error) {
	key := p + " " + what
	ch := make(chan struct{}, s)
	w.mu.Lock()
	w.waiting[key] = ch
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.waiting, key)
		delete(w.seen, key)
		w.mu.Unlock()
	}()
	if err := do(); err != nil {
		return 0, err
	}
	start := time.Now()
	timeout := time.After(30 * time.Second)
	for range s {
		select {
		case <-ch:
		case <-timeout:
			return 0, fmt.Errorf("%s did not reach every server's mirror within 30 s", key)
		}
	}
	// The requesting server logs before it answers: the time is that of
	// the slowest other server (0 with one server).
	return time.Since(start), nil
}

func (w *watcher) handler(server int) slog.Handler { return &watchHandler{w, server} }

// watchHandler is a server's slog.Handler: it counts the load's
// registrations and signals the probes'.
type watchHandler struct {
	w      *watcher
	server int
}

func (h *watchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *watchHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *watchHandler) WithGroup(string) slog.Handler                { return h }

func (h *watchHandler) Handle(_ context.Context, r slog.Record) error {
	what, ok := strings.CutPrefix(r.Message, "nano: service ")
	if !ok {
		if r.Level >= slog.LevelWarn {
			fmt.Fprintf(os.Stderr, "server %d: %s\n", h.server, r.Message)
		}
		return nil
	}
	var p string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pattern" {
			p = a.Value.String()
			return false
		}
		return true
	})
	if !strings.HasPrefix(p, "probe:") {
		if what == "registered" {
			h.w.held[h.server].Add(1)
		}
		return nil
	}
	key := p + " " + what
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	ch, ok := h.w.waiting[key]
	if !ok {
		return nil
	}
	if h.w.seen[key] == nil {
		h.w.seen[key] = map[int]struct{}{}
	}
	if _, dup := h.w.seen[key][h.server]; !dup {
		h.w.seen[key][h.server] = struct{}{}
		ch <- struct{}{}
	}
	return nil
}

// redisServer is a redis-server of this program's own.
type redisServer struct {
	addr string
	dir  string
	cmd  *exec.Cmd
}

func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not installed: the benchmark needs a real Redis")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "fleet-redis-")
	if err != nil {
		return nil, err
	}
	r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	r.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	started(r.cmd)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	for range 100 {
		if rdb.Ping(context.Background()).Err() == nil {
			return r, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.stop()
	return nil, errors.New("redis-server did not answer within 5 s")
}

func (r *redisServer) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	stopped(r.cmd)
	os.RemoveAll(r.dir)
}

// renewer is the second process: "renew N TTL ADDRS" registers N
// instances, pattern i at server i mod S, prints "loaded", then renews
// each every TTL/3, evenly spread, until it is killed.
func renewer(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "fleet renew: want N TTL ADDRS")
		return 2
	}
	n, err1 := strconv.Atoi(args[0])
	ttl, err2 := time.ParseDuration(args[1])
	addrs := strings.Split(args[2], ",")
	if err1 != nil || err2 != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "fleet renew: bad arguments")
		return 2
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	register := func(i int) error {
		body := fmt.Sprintf(`{"Pattern":"fleet:%d,kind:load","ServiceAddress":"127.0.0.1:%d"}`, i, 1+i%60000)
		return post(client, "http://"+addrs[i%len(addrs)]+"/register", body)
	}
	// Load with 32 workers.
	next := atomic.Int64{}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if register(i) != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		fmt.Fprintf(os.Stderr, "fleet renew: %d registrations failed\n", f)
		return 1
	}
	fmt.Println("loaded")
	// Renew: each of 16 workers takes its share of the instances and
	// spreads it over a third of the TTL.
	const workers = 16
	period := ttl / 3
	for w := range workers {
		wg.Go(func() {
			mine := (n + workers - 1 - w) / workers
			if mine == 0 {
				return
			}
			tick := time.NewTicker(max(period/time.Duration(mine), time.Microsecond))
			defer tick.Stop()
			for i := w; ; i += workers {
				if i >= n {
					i = w
				}
				<-tick.C
				if err := register(i); err != nil {
					fmt.Fprintln(os.Stderr, "fleet renew:", err)
				}
			}
		})
	}
	wg.Wait()
	return 0
}
