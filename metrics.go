package nano

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metrics are a server's counters, written at GET /metrics in the
// Prometheus text format. The format is simple and the set of metrics
// small, so the package writes it itself rather than import a metrics
// library into every program that uses nano.
type metrics struct {
	mu             sync.RWMutex // guards requests; the counters are atomic
	requests       map[requestKey]*atomic.Uint64
	upstream       histogram
	registryErrors atomic.Uint64
	failovers      atomic.Uint64
}

// requestKey labels a count of proxied messages: the registered pattern
// that routed them (empty when none did: the message was refused before),
// and the status answered.
type requestKey struct {
	pattern string
	status  int
}

// count adds one message to its pattern and status. A counter that exists
// is found under the read lock, without allocating.
func (m *metrics) count(pattern string, status int) {
	k := requestKey{pattern, status}
	m.mu.RLock()
	c := m.requests[k]
	m.mu.RUnlock()
	if c == nil {
		m.mu.Lock()
		if c = m.requests[k]; c == nil {
			if m.requests == nil {
				m.requests = make(map[requestKey]*atomic.Uint64)
			}
			c = new(atomic.Uint64)
			m.requests[k] = c
		}
		m.mu.Unlock()
	}
	c.Add(1)
}

// upstreamBuckets are the upper bounds, in seconds, of the histogram of the
// time services take to answer.
var upstreamBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts durations in upstreamBuckets.
type histogram struct {
	counts [len(upstreamBuckets) + 1]atomic.Uint64 // the last counts those over every bound
	sumNs  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(upstreamBuckets) && s > upstreamBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// metricsEndpoint handles GET /metrics.
func (s *Server) metricsEndpoint(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriterSize(w, 32<<10)
	defer bw.Flush()
	m := &s.metrics

	type sample struct {
		key requestKey
		n   uint64
	}
	// Counters of patterns that left the mirror are dropped, so that the
	// series follow the registry rather than its whole history.
	var reqs []sample
	m.mu.Lock()
	for key, c := range m.requests {
		if _, ok := s.routes.get(key.pattern); key.pattern != "" && !ok {
			delete(m.requests, key)
			continue
		}
		reqs = append(reqs, sample{key, c.Load()})
	}
	m.mu.Unlock()
	slices.SortFunc(reqs, func(a, b sample) int {
		if c := strings.Compare(a.key.pattern, b.key.pattern); c != 0 {
			return c
		}
		return a.key.status - b.key.status
	})
	help(bw, "nano_requests_total", "counter", "Messages this server answered, by the registered pattern that routed them (empty: refused before routing) and status.")
	for _, r := range reqs {
		fmt.Fprintf(bw, "nano_requests_total{pattern=\"%s\",status=\"%d\"} %d\n", labelValue(r.key.pattern), r.key.status, r.n)
	}

	help(bw, "nano_upstream_duration_seconds", "histogram", "Time from sending a message to a service to the head of its answer.")
	var cum uint64
	for i, le := range upstreamBuckets {
		cum += m.upstream.counts[i].Load()
		fmt.Fprintf(bw, "nano_upstream_duration_seconds_bucket{le=\"%s\"} %d\n", strconv.FormatFloat(le, 'g', -1, 64), cum)
	}
	cum += m.upstream.counts[len(upstreamBuckets)].Load()
	fmt.Fprintf(bw, "nano_upstream_duration_seconds_bucket{le=\"+Inf\"} %d\n", cum)
	fmt.Fprintf(bw, "nano_upstream_duration_seconds_sum %s\n", strconv.FormatFloat(float64(m.upstream.sumNs.Load())/1e9, 'g', -1, 64))
	fmt.Fprintf(bw, "nano_upstream_duration_seconds_count %d\n", cum)

	help(bw, "nano_failovers_total", "counter", "Instances dropped from the mirror for refusing a message or having no handler for it; the message went on to the next instance, if any.")
	fmt.Fprintf(bw, "nano_failovers_total %d\n", m.failovers.Load())
	help(bw, "nano_registry_errors_total", "counter", "Calls to the registry (Redis) that failed.")
	fmt.Fprintf(bw, "nano_registry_errors_total %d\n", m.registryErrors.Load())
	help(bw, "nano_registry_ready", "gauge", "1 while the registry answers, 0 while it does not.")
	fmt.Fprintf(bw, "nano_registry_ready %d\n", boolInt(s.ready.Load()))

	now := s.now()
	type count struct {
		pattern string
		live    int
	}
	var per []count
	s.routes.each(func(rt *route) { per = append(per, count{rt.pattern, rt.liveCount(now)}) })
	slices.SortFunc(per, func(a, b count) int { return strings.Compare(a.pattern, b.pattern) })
	help(bw, "nano_patterns", "gauge", "Patterns in this server's mirror of the registry.")
	fmt.Fprintf(bw, "nano_patterns %d\n", len(per))
	help(bw, "nano_instances", "gauge", "Live instances of each pattern in this server's mirror.")
	for _, c := range per {
		fmt.Fprintf(bw, "nano_instances{pattern=\"%s\"} %d\n", labelValue(c.pattern), c.live)
	}
}

func help(w *bufio.Writer, name, kind, text string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, kind)
}

// labelValue escapes a label value of the text format.
func labelValue(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
