package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// readinessInterval is how often the watcher asks each server's /readyz.
const readinessInterval = 500 * time.Millisecond

// watcher watches the fleet while a run lasts: how each server answers
// GET /readyz, often; and, every sample interval, the memory and the
// goroutines of every process. Its methods are safe for concurrent use.
type watcher struct {
	fleet  *fleet
	client *http.Client // short timeouts: a stopped process must not hold a sample up
	start  time.Time    // of the run

	mu      sync.Mutex // guards the fields below
	usage   map[*process]*usage
	changes []readyChange     // in time order
	state   map[string]string // server name -> its last readiness
}

// usage is what the samples of one process showed.
type usage struct {
	samples    int
	rss        series // bytes
	goroutines series
}

// series is the first, least, most and last of the values of a gauge.
type series struct {
	n                     int
	first, min, max, last int64
}

func (s *series) add(v int64) {
	if s.n == 0 {
		s.first, s.min, s.max = v, v, v
	}
	s.n++
	s.min, s.max, s.last = min(s.min, v), max(s.max, v), v
}

// readyChange is a change in how a server answers GET /readyz.
type readyChange struct {
	at     time.Duration // since the run began
	server string
	state  string // ready, not ready (with the status), down (no answer)
}

func newWatcher(f *fleet, start time.Time) *watcher {
	return &watcher{
		fleet:  f,
		client: &http.Client{Timeout: time.Second},
		start:  start,
		usage:  make(map[*process]*usage),
		state:  make(map[string]string),
	}
}

// watch watches readiness and samples usage every interval until ctx
// ends.
func (w *watcher) watch(ctx context.Context, interval time.Duration) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			w.checkReadiness()
			if !sleep(ctx, readinessInterval) {
				return
			}
		}
	})
	wg.Go(func() {
		for sleep(ctx, interval) {
			w.sample()
		}
	})
	wg.Wait()
}

// checkReadiness asks every server's GET /readyz once and notes changes.
func (w *watcher) checkReadiness() {
	for i, addr := range w.fleet.serverAddrs {
		state := "ready"
		resp, err := w.client.Get("http://" + addr + "/readyz")
		if err != nil {
			state = "down"
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				state = fmt.Sprintf("not ready (%d)", resp.StatusCode)
			}
		}
		name := serverName(i)
		w.mu.Lock()
		if w.state[name] != state {
			w.state[name] = state
			w.changes = append(w.changes, readyChange{at: time.Since(w.start), server: name, state: state})
		}
		w.mu.Unlock()
	}
}

// readiness returns, for each server, how it answered GET /readyz at from
// and how that changed until to.
func (w *watcher) readiness(from, to time.Duration) (at map[string]string, changes []readyChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at = make(map[string]string)
	for _, c := range w.changes {
		switch {
		case c.at <= from:
			at[c.server] = c.state
		case c.at < to:
			changes = append(changes, c)
		}
	}
	return at, changes
}

// sample reads the memory of every running process and the goroutines
// of every server and instance that is not paused.
func (w *watcher) sample() {
	for _, p := range w.fleet.processes() {
		if p.exited() || !p.up.Load() {
			continue
		}
		rss := readRSS(p.cmd.Process.Pid)
		goroutines := int64(-1)
		if p.kind != "redis" && !p.paused.Load() {
			goroutines = w.goroutines(p.addr)
		}
		w.mu.Lock()
		u := w.usage[p]
		if u == nil {
			u = &usage{}
			w.usage[p] = u
		}
		u.samples++
		if rss >= 0 {
			u.rss.add(rss)
		}
		if goroutines >= 0 {
			u.goroutines.add(goroutines)
		}
		w.mu.Unlock()
	}
}

// usageOf returns what the samples of p showed.
func (w *watcher) usageOf(p *process) usage {
	w.mu.Lock()
	defer w.mu.Unlock()
	if u := w.usage[p]; u != nil {
		return *u
	}
	return usage{}
}

// goroutines reads go_goroutines from GET /metrics at addr; -1 when it
// cannot.
func (w *watcher) goroutines(addr string) int64 {
	resp, err := w.client.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1
	}
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// routes says, for each server, which instances it routes the pattern to
// now, each named with its state when it is not live, and which live
// instances it lacks.
func (w *watcher) routes() []string {
	serving := w.fleet.serving()
	var lines []string
	for i, addr := range w.fleet.serverAddrs {
		addrs, err := resolve(w.client, addr, w.fleet.cfg.pattern)
		if err != nil {
			lines = append(lines, fmt.Sprintf("%s: %v", serverName(i), err))
			continue
		}
		var names []string
		routed := make(map[string]bool)
		for _, a := range addrs {
			routed[a] = true
			p := w.fleet.instanceAt(a)
			switch {
			case p == nil:
				names = append(names, a+" (unknown)")
			case p.state() != "live":
				names = append(names, p.name+" ("+p.state()+")")
			default:
				names = append(names, p.name)
			}
		}
		var missing []string
		for a := range serving {
			if !routed[a] {
				if p := w.fleet.instanceAt(a); p != nil {
					missing = append(missing, p.name)
				}
			}
		}
		sortNames(names)
		line := fmt.Sprintf("%s: %s", serverName(i), strings.Join(names, " "))
		if len(names) == 0 {
			line = serverName(i) + ": none"
		}
		if len(missing) > 0 {
			sortNames(missing)
			line += "; lacks " + strings.Join(missing, " ")
		}
		lines = append(lines, line)
	}
	return lines
}

// resolve asks the server at addr for the instances of pattern (GET
// /resolve) and returns their addresses; none when it answers 404.
func resolve(client *http.Client, addr, pattern string) ([]string, error) {
	resp, err := client.Get("http://" + addr + "/resolve?pattern=" + url.QueryEscape(pattern))
	if err != nil {
		return nil, fmt.Errorf("no answer to /resolve")
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/resolve answered %d", resp.StatusCode)
	}
	var res struct {
		Instances []struct{ ServiceAddress string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("/resolve: %v", err)
	}
	var addrs []string
	for _, in := range res.Instances {
		addrs = append(addrs, in.ServiceAddress)
	}
	return addrs, nil
}

// readRSS returns the resident memory of process pid in bytes, from
// /proc/PID/status; -1 where there is no such file.
func readRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}
