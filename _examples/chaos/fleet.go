package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// shutdownGrace is how long an instance or a server may take to exit
// after SIGTERM before it gets SIGKILL.
const shutdownGrace = 5 * time.Second

// startTimeout bounds the start of a process: until Redis answers PING, a
// server answers GET /healthz, an instance prints its address.
const startTimeout = 15 * time.Second

// binaries are the programs the fleet runs.
type binaries struct {
	redis, server, instance string
}

// build builds the nano server and the instance program into dir.
func build(ctx context.Context, dir, redisBin string) (binaries, error) {
	b := binaries{
		redis:    redisBin,
		server:   filepath.Join(dir, "nano-server"),
		instance: filepath.Join(dir, "instance"),
	}
	for bin, pkg := range map[string]string{
		b.server:   "github.com/domWinter/go-nano/cmd/nano-server",
		b.instance: "github.com/domWinter/go-nano/testdata/instance",
	} {
		out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
		if err != nil {
			return b, fmt.Errorf("go build %s (run chaos from the go-nano repository): %v\n%s", pkg, err, out)
		}
	}
	return b, nil
}

// process is a program the fleet started.
type process struct {
	name    string // redis, s1, i4; a restart adds #2, #3...
	kind    string // redis, server or instance
	cmd     *exec.Cmd
	started time.Duration // since the run began
	done    chan struct{} // closed once the process has exited

	addr   string      // where it answers; set before up is
	up     atomic.Bool // it has started and answers at addr
	paused atomic.Bool // it got SIGSTOP and no SIGCONT since

	ended  time.Duration // when it exited; set before done is closed
	status error         // what Wait returned; set before done is closed
	// how tells how it ended ("SIGKILL (fault)", "SIGTERM at the end,
	// exited in 12ms"); written by whoever ended it, read once it has.
	how string
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process, if it still runs.
func (p *process) signal(sig syscall.Signal) {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
}

// kill ends the process with SIGKILL and waits until it has exited.
func (p *process) kill(how string) {
	if !p.exited() {
		p.how = how
	}
	p.signal(syscall.SIGKILL)
	<-p.done
}

// terminate sends SIGTERM (after SIGCONT, should the process be paused)
// and waits up to grace for it to exit, then kills it. It returns how long
// the process took to exit, and whether it had to be killed.
func (p *process) terminate(grace time.Duration) (took time.Duration, killed bool) {
	if p.exited() {
		return 0, false
	}
	start := time.Now()
	p.resume()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return time.Since(start), false
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-p.done
		return time.Since(start), true
	}
}

// pause stops the process with SIGSTOP.
func (p *process) pause() {
	p.paused.Store(true)
	p.signal(syscall.SIGSTOP)
}

// resume lets a paused process go on with SIGCONT.
func (p *process) resume() {
	if p.paused.Swap(false) {
		p.signal(syscall.SIGCONT)
	}
}

// state is how a process is doing, as a word for the report.
func (p *process) state() string {
	switch {
	case p.exited():
		return "gone"
	case p.paused.Load():
		return "stopped"
	}
	return "live"
}

// instance is an instance process and the server it registered at.
type instance struct {
	*process
	server int // index of the server in the fleet
}

// fleet is the processes of a run: a Redis, the nano servers sharing it
// and the instances registered at them. Its methods are safe for
// concurrent use.
type fleet struct {
	cfg   config
	dir   string // work folder: binaries, Redis's folder, logs
	bins  binaries
	began time.Time // the run: processes' times count from it

	redisAddr   string   // fixed for the run: a restarted Redis comes back there
	serverAddrs []string // the same for the servers

	mu        sync.Mutex // guards the fields below
	procs     []*process // every process started, in order
	redis     *process
	servers   []*process  // the current life of each server
	instances []*instance // one per slot; a replacement takes the slot of the one it replaces
	lives     map[string]int
	nextID    int
}

func newFleet(cfg config, dir string, bins binaries, start time.Time) *fleet {
	return &fleet{cfg: cfg, dir: dir, bins: bins, began: start, lives: make(map[string]int)}
}

// start starts Redis, the servers and the instances, and waits until
// every server routes the pattern to every instance.
func (f *fleet) start(ctx context.Context) error {
	ports, err := freePorts(1 + f.cfg.servers)
	if err != nil {
		return err
	}
	f.redisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	for _, port := range ports[1:] {
		f.serverAddrs = append(f.serverAddrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	f.servers = make([]*process, f.cfg.servers)
	if _, err := f.startRedis(ctx); err != nil {
		return err
	}
	for i := range f.serverAddrs {
		if _, err := f.startServer(ctx, i); err != nil {
			return err
		}
	}
	for i := range f.cfg.instances {
		in, err := f.startInstance(ctx, i%f.cfg.servers)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.instances = append(f.instances, in)
		f.mu.Unlock()
	}
	return f.waitRoutes(ctx)
}

// waitRoutes waits until every server routes the pattern to every
// instance.
func (f *fleet) waitRoutes(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	want := f.cfg.instances
	for deadline := time.Now().Add(startTimeout); ; {
		ready := 0
		for _, addr := range f.serverAddrs {
			if addrs, err := resolve(client, addr, f.cfg.pattern); err == nil && len(addrs) == want {
				ready++
			}
		}
		if ready == len(f.serverAddrs) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v, %d of %d servers route %s to all %d instances", startTimeout, ready, len(f.serverAddrs), f.cfg.pattern, want)
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// startRedis starts a redis-server on the fleet's Redis address, empty,
// and waits until it answers.
func (f *fleet) startRedis(ctx context.Context) (*process, error) {
	_, port, _ := net.SplitHostPort(f.redisAddr)
	data := filepath.Join(f.dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	// No persistence, so that a restarted Redis starts empty.
	args := []string{"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", data}
	p, err := f.launch("redis", "redis", f.bins.redis, args, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := waitUntil(ctx, p, func() bool { return pingRedis(f.redisAddr) }); err != nil {
		p.kill("SIGKILL (did not answer)")
		return nil, fmt.Errorf("redis-server on %s: %w", f.redisAddr, err)
	}
	p.addr = f.redisAddr
	p.up.Store(true)
	f.mu.Lock()
	f.redis = p
	f.mu.Unlock()
	return p, nil
}

// startServer starts server i on its address and waits until it answers.
func (f *fleet) startServer(ctx context.Context, i int) (*process, error) {
	addr := f.serverAddrs[i]
	_, port, _ := net.SplitHostPort(addr)
	args := []string{
		"-host", "127.0.0.1", "-port", port, "-redis", f.redisAddr,
		"-ttl", f.cfg.ttl.String(), "-resync", f.cfg.resync.String(),
		"-upstream-timeout", f.cfg.upstreamTimeout.String(),
		"-shutdown-timeout", (shutdownGrace - time.Second).String(),
		"-log-level", "info",
	}
	p, err := f.launch("server", serverName(i), f.bins.server, args, nil, nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: time.Second}
	healthy := func() bool {
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if err := waitUntil(ctx, p, healthy); err != nil {
		p.kill("SIGKILL (did not answer)")
		return nil, fmt.Errorf("nano server %s on %s: %w", serverName(i), addr, err)
	}
	p.addr = addr
	p.up.Store(true)
	f.mu.Lock()
	f.servers[i] = p
	f.mu.Unlock()
	return p, nil
}

// startInstance starts a new instance registered at server i, and at the
// other servers in turn when that one does not answer, and waits until it
// prints its address. It does not wait for the registration.
func (f *fleet) startInstance(ctx context.Context, server int) (*instance, error) {
	f.mu.Lock()
	f.nextID++
	id := fmt.Sprintf("i%d", f.nextID)
	f.mu.Unlock()
	servers := append(slices.Clone(f.serverAddrs[server:]), f.serverAddrs[:server]...)
	env := []string{"NANO_SERVER=" + strings.Join(servers, ","), "NANO_PATTERN=" + f.cfg.pattern, "NANO_ID=" + id}
	found := make(chan string, 1)
	p, err := f.launch("instance", id, f.bins.instance, nil, env, func(log io.Writer) io.Writer {
		return &addrWatcher{w: log, found: found}
	})
	if err != nil {
		return nil, err
	}
	var addr string
	listening := func() bool {
		select {
		case addr = <-found:
			return true
		default:
			return false
		}
	}
	if err := waitUntil(ctx, p, listening); err != nil {
		p.kill("SIGKILL (did not start)")
		return nil, fmt.Errorf("instance %s: %w", id, err)
	}
	p.addr = addr
	p.up.Store(true)
	return &instance{process: p, server: server}, nil
}

// launch starts bin with args and env (beside an environment without
// NANO_ variables) and keeps its output in a log file of the work folder.
// stdout, if not nil, wraps the log for the process's standard output.
func (f *fleet) launch(kind, name, bin string, args, env []string, stdout func(io.Writer) io.Writer) (*process, error) {
	f.mu.Lock()
	f.lives[name]++
	if n := f.lives[name]; n > 1 {
		name = fmt.Sprintf("%s#%d", name, n)
	}
	f.mu.Unlock()
	log, err := os.Create(filepath.Join(f.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(environWithout("NANO_"), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if stdout != nil {
		cmd.Stdout = stdout(log)
	}
	cmd.SysProcAttr = childAttributes()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &process{name: name, kind: kind, cmd: cmd, started: time.Since(f.began), done: make(chan struct{})}
	go func() {
		p.status = cmd.Wait()
		log.Close()
		p.ended = time.Since(f.began)
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p, nil
}

// stopAll ends every process still running: instances first, then
// servers, each with SIGTERM and grace to exit before SIGKILL; Redis last,
// with SIGKILL. It returns once all have exited, and may be called again.
func (f *fleet) stopAll(grace time.Duration) {
	for _, kind := range []string{"instance", "server"} {
		var wg sync.WaitGroup
		for _, p := range f.processes() {
			if p.kind != kind || p.exited() {
				continue
			}
			wg.Go(func() {
				took, killed := p.terminate(grace)
				p.how = fmt.Sprintf("SIGTERM at the end, exited in %v", roundDuration(took))
				if killed {
					p.how = fmt.Sprintf("SIGTERM at the end; SIGKILL %v later", grace)
				}
			})
		}
		wg.Wait()
	}
	for _, p := range f.processes() {
		p.kill("SIGKILL at the end")
	}
}

// processes returns every process started so far, in order.
func (f *fleet) processes() []*process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*process(nil), f.procs...)
}

// currentRedis returns the Redis process of now, running or not.
func (f *fleet) currentRedis() *process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.redis
}

// server returns the current life of server i.
func (f *fleet) server(i int) *process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.servers[i]
}

// victim returns the slot and instance of the n-th instance fault: the
// slots take turns, passing over those whose instance has exited.
func (f *fleet) victim(n int) (int, *instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.instances {
		slot := (n + k) % len(f.instances)
		if in := f.instances[slot]; !in.exited() {
			return slot, in
		}
	}
	return 0, nil
}

// replace puts in in slot.
func (f *fleet) replace(slot int, in *instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances[slot] = in
}

// serving returns the addresses of the instances that serve now: started,
// neither exited nor paused.
func (f *fleet) serving() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]bool)
	for _, in := range f.instances {
		if in.state() == "live" {
			m[in.addr] = true
		}
	}
	return m
}

// instanceAt returns the latest instance started at addr, or nil.
func (f *fleet) instanceAt(addr string) *process {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.procs) - 1; i >= 0; i-- {
		if p := f.procs[i]; p.kind == "instance" && p.up.Load() && p.addr == addr {
			return p
		}
	}
	return nil
}

// serverName names server i, from s1.
func serverName(i int) string { return fmt.Sprintf("s%d", i+1) }

// addrWatcher passes an instance's output on to w and sends the address
// of the line "listening host:port" to found.
type addrWatcher struct {
	w     io.Writer
	found chan<- string // buffered: the first address is kept
	line  []byte        // the start of a line not yet ended
}

func (a *addrWatcher) Write(p []byte) (int, error) {
	a.line = append(a.line, p...)
	for {
		i := bytes.IndexByte(a.line, '\n')
		if i < 0 {
			break
		}
		if addr, ok := strings.CutPrefix(string(a.line[:i]), "listening "); ok {
			select {
			case a.found <- strings.TrimSpace(addr):
			default:
			}
		}
		a.line = a.line[i+1:]
	}
	if len(a.line) > 4096 {
		a.line = nil
	}
	return a.w.Write(p)
}

// waitUntil polls ready until it holds, the process exits, startTimeout
// passes or ctx ends.
func waitUntil(ctx context.Context, p *process, ready func() bool) error {
	for deadline := time.Now().Add(startTimeout); !ready(); {
		if p.exited() {
			return errors.New("exited at start (see its log with -keep)")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not up after %v", startTimeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

// pingRedis reports whether a Redis at addr answers PING.
func pingRedis(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// environWithout returns the environment less the variables whose names
// start with prefix: the user's own settings must not steer the fleet.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
