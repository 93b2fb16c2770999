package nano

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What servers, services and clients count, and GET /metrics, which shows
// it in the Prometheus text format. The format is simple and the set of
// metrics small, so the package writes it itself rather than import a
// metrics library into every program that uses nano.

// serverMetrics are a server's counters.
type serverMetrics struct {
	requests       counters[statusKey] // messages answered, by routing pattern and status
	upstream       histogram           // time services take to answer
	registryErrors atomic.Uint64
	failovers      atomic.Uint64
	refusals       counters[int] // registrations and deregistrations refused, by status
}

// count counts a message answered with status, under the pattern that
// routed it.
func (m *serverMetrics) count(pattern string, status int) {
	m.requests.add(statusKey{pattern, status})
}

// serviceMetrics are a service's counters but those of each handler,
// which its handler holds.
type serviceMetrics struct {
	inFlight atomic.Int64 // handlers running
}

// handlerMetrics are the counters of one handler: found with the handler,
// without a lookup. A zero handlerMetrics is ready to use.
type handlerMetrics struct {
	ok       atomic.Uint64 // calls answered 200
	others   counters[int] // calls answered otherwise, by status
	duration histogram
}

// count counts a call of the handler that answered status.
func (m *handlerMetrics) count(status int) {
	if status == http.StatusOK {
		m.ok.Add(1)
	} else {
		m.others.add(status)
	}
}

// clientMetrics are the counters of a client's Act calls.
type clientMetrics struct {
	calls counters[outcomeKey] // by pattern and outcome, at most maxActSeries of them
}

// statusKey labels a count by pattern and status.
type statusKey struct {
	pattern string
	status  int
}

// outcomeKey labels a count of Act calls by pattern and outcome.
type outcomeKey struct {
	pattern string
	outcome string
}

// maxActSeries bounds the series of Act calls, pattern and outcome: the
// patterns come from the program's own calls, but a program that builds
// them from its input should not grow the metrics without bound. Calls
// that would start a series past it are counted under the pattern "".
const maxActSeries = 6000

// Outcomes of an Act call.
const (
	outcomeOK          = "ok"          // the handler's answer came back
	outcomeError       = "error"       // the far side answered with an error
	outcomeNoService   = "no_service"  // nothing handles the pattern
	outcomeTimeout     = "timeout"     // the call's deadline passed
	outcomeCanceled    = "canceled"    // the call's context was canceled
	outcomeUnavailable = "unavailable" // no answer: the far side could not be reached or answered badly
)

// countAct counts an Act call of pattern p that ended with err.
func (m *clientMetrics) countAct(p string, err error) {
	m.calls.addBounded(outcomeKey{p, outcomeOf(err)}, maxActSeries, func(k outcomeKey) outcomeKey {
		k.pattern = ""
		return k
	})
}

// outcomeOf classifies the end of an Act call.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrNoService):
		return outcomeNoService
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrTimeout):
		return outcomeTimeout
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, ErrServiceUnavailable), errors.Is(err, ErrNoInstance), errors.Is(err, ErrRegistryUnavailable), errors.Is(err, ErrClosed):
		return outcomeUnavailable
	}
	return outcomeError
}

// counters counts events by a comparable key. A counter that exists is
// found under a read lock, without allocating. A zero counters is ready to
// use; it is safe for concurrent use.
type counters[K comparable] struct {
	mu sync.RWMutex // guards m; the counters are atomic
	m  map[K]*atomic.Uint64
}

// add counts one event of k.
func (c *counters[K]) add(k K) { c.addBounded(k, 0, nil) }

// addBounded counts one event of k; when k is new and max keys (if max is
// positive) are counted already, it counts the event under other(k).
func (c *counters[K]) addBounded(k K, max int, other func(K) K) {
	c.mu.RLock()
	n := c.m[k]
	c.mu.RUnlock()
	if n == nil {
		c.mu.Lock()
		if n = c.m[k]; n == nil && max > 0 && len(c.m) >= max {
			k = other(k)
			n = c.m[k]
		}
		if n == nil {
			if c.m == nil {
				c.m = make(map[K]*atomic.Uint64)
			}
			n = new(atomic.Uint64)
			c.m[k] = n
		}
		c.mu.Unlock()
	}
	n.Add(1)
}

// snapshot returns the counts, dropping first the keys for which forget
// returns true (nil forgets none), sorted by cmp.
func (c *counters[K]) snapshot(forget func(K) bool, compare func(a, b K) int) []count[K] {
	c.mu.Lock()
	out := make([]count[K], 0, len(c.m))
	for k, n := range c.m {
		if forget != nil && forget(k) {
			delete(c.m, k)
			continue
		}
		out = append(out, count[K]{k, n.Load()})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b count[K]) int { return compare(a.key, b.key) })
	return out
}

// count is a key with its count.
type count[K comparable] struct {
	key K
	n   uint64
}

// compareStatus orders status keys by pattern, then status.
func compareStatus(a, b statusKey) int {
	return cmp.Or(strings.Compare(a.pattern, b.pattern), cmp.Compare(a.status, b.status))
}

// compareOutcome orders outcome keys by pattern, then outcome.
func compareOutcome(a, b outcomeKey) int {
	return cmp.Or(strings.Compare(a.pattern, b.pattern), strings.Compare(a.outcome, b.outcome))
}

// durationBuckets are the upper bounds, in seconds, of the histograms of
// durations.
var durationBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts durations in durationBuckets. A zero histogram is
// ready to use; it is safe for concurrent use.
type histogram struct {
	counts [len(durationBuckets) + 1]atomic.Uint64 // the last counts those over every bound
	sumNs  atomic.Int64
}

// total is the number of durations observed.
func (h *histogram) total() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(durationBuckets) && s > durationBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// metricsEndpoint handles GET /metrics on a server.
func (s *Server) metricsEndpoint(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	bw := metricsWriter(w)
	defer bw.Flush()
	m := &s.metrics

	// Counters of patterns that left the mirror are dropped, so that the
	// series follow the registry rather than its whole history.
	left := func(k statusKey) bool {
		_, ok := s.routes.get(k.pattern)
		return k.pattern != "" && !ok
	}
	help(bw, "nano_requests_total", "counter", "Messages this server answered, by the registered pattern that routed them (empty: refused before routing) and status (499: the client hung up).")
	for _, c := range m.requests.snapshot(left, compareStatus) {
		fmt.Fprintf(bw, "nano_requests_total{pattern=\"%s\",status=\"%d\"} %d\n", labelValue(c.key.pattern), c.key.status, c.n)
	}
	help(bw, "nano_upstream_duration_seconds", "histogram", "Time from sending a message to a service to the head of its answer.")
	writeHistogram(bw, "nano_upstream_duration_seconds", "", &m.upstream)

	help(bw, "nano_failovers_total", "counter", "Messages sent on to another instance because the one tried could not be reached or had no handler for them.")
	fmt.Fprintf(bw, "nano_failovers_total %d\n", m.failovers.Load())
	help(bw, "nano_ejections_total", "counter", "Instances ejected for failing again and again (outlier detection).")
	fmt.Fprintf(bw, "nano_ejections_total %d\n", s.outliers.ejections.Load())
	help(bw, "nano_registrations_refused_total", "counter", "Registrations and deregistrations refused, by status (401: no token, 403: identity not allowed, 400: invalid, 413: too large).")
	for _, c := range m.refusals.snapshot(nil, cmp.Compare[int]) {
		fmt.Fprintf(bw, "nano_registrations_refused_total{status=\"%d\"} %d\n", c.key, c.n)
	}
	help(bw, "nano_registry_errors_total", "counter", "Calls to the registry (Redis) that failed.")
	fmt.Fprintf(bw, "nano_registry_errors_total %d\n", m.registryErrors.Load())
	help(bw, "nano_registry_ready", "gauge", "1 while the registry answers, 0 while it does not.")
	fmt.Fprintf(bw, "nano_registry_ready %d\n", boolInt(s.ready.Load()))

	now := s.now()
	type live struct {
		pattern    string
		n, ejected int
	}
	var per []live
	wall := time.Now().UnixNano()
	s.routes.each(func(rt *route) { per = append(per, live{rt.pattern, rt.liveCount(now), ejectedCount(rt, wall)}) })
	slices.SortFunc(per, func(a, b live) int { return strings.Compare(a.pattern, b.pattern) })
	writeProcess(bw)
	help(bw, "nano_patterns", "gauge", "Patterns in this server's mirror of the registry.")
	fmt.Fprintf(bw, "nano_patterns %d\n", len(per))
	help(bw, "nano_instances", "gauge", "Live instances of each pattern in this server's mirror.")
	for _, c := range per {
		fmt.Fprintf(bw, "nano_instances{pattern=\"%s\"} %d\n", labelValue(c.pattern), c.n)
	}
	help(bw, "nano_ejected_instances", "gauge", "Live instances ejected now, of the patterns that have any.")
	for _, c := range per {
		if c.ejected > 0 {
			fmt.Fprintf(bw, "nano_ejected_instances{pattern=\"%s\"} %d\n", labelValue(c.pattern), c.ejected)
		}
	}
}

// metricsEndpoint handles GET /metrics on a service: its handlers, and
// the calls its Act made.
func (s *Service) metricsEndpoint(w http.ResponseWriter) {
	bw := metricsWriter(w)
	defer bw.Flush()
	m := &s.metrics
	var handlers []*handler
	s.routes.each(func(_ string, h *handler) { handlers = append(handlers, h) })
	help(bw, "nano_handler_calls_total", "counter", "Messages this service's handlers answered, by handler pattern and status (499: the caller hung up).")
	for _, h := range handlers {
		p := labelValue(h.pattern)
		if n := h.metrics.ok.Load(); n > 0 {
			fmt.Fprintf(bw, "nano_handler_calls_total{pattern=\"%s\",status=\"200\"} %d\n", p, n)
		}
		for _, c := range h.metrics.others.snapshot(nil, cmp.Compare[int]) {
			fmt.Fprintf(bw, "nano_handler_calls_total{pattern=\"%s\",status=\"%d\"} %d\n", p, c.key, c.n)
		}
	}
	help(bw, "nano_handler_duration_seconds", "histogram", "Time handlers took to answer, by handler pattern.")
	for _, h := range handlers {
		if h.metrics.duration.total() > 0 {
			writeHistogram(bw, "nano_handler_duration_seconds", `pattern="`+labelValue(h.pattern)+`",`, &h.metrics.duration)
		}
	}
	writeProcess(bw)
	help(bw, "nano_handlers_in_flight", "gauge", "Handlers running now.")
	fmt.Fprintf(bw, "nano_handlers_in_flight %d\n", m.inFlight.Load())
	help(bw, "nano_act_ejections_total", "counter", "Instances this service's Act ejected for failing again and again (outlier detection).")
	fmt.Fprintf(bw, "nano_act_ejections_total %d\n", s.client.outliers.ejections.Load())
	help(bw, "nano_act_calls_total", "counter", "Calls this service made with Act, by pattern and outcome (ok, error, no_service, timeout, canceled, unavailable).")
	for _, c := range s.client.metrics.calls.snapshot(nil, compareOutcome) {
		fmt.Fprintf(bw, "nano_act_calls_total{pattern=\"%s\",outcome=\"%s\"} %d\n", labelValue(c.key.pattern), c.key.outcome, c.n)
	}
}

// writeProcess writes the gauges of the process a server or service runs
// in, under the names the Prometheus Go client gives them.
func writeProcess(w *bufio.Writer) {
	help(w, "go_goroutines", "gauge", "Goroutines of the process.")
	fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
}

// metricsWriter sets the Content-Type of the text format and returns a
// buffered writer to w, which the caller flushes.
func metricsWriter(w http.ResponseWriter) *bufio.Writer {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	return bufio.NewWriterSize(w, 32<<10)
}

// writeHistogram writes the samples of h as the histogram name, with the
// labels given (each followed by a comma, or empty) before le.
func writeHistogram(w *bufio.Writer, name, labels string, h *histogram) {
	var cum uint64
	for i, le := range durationBuckets {
		cum += h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{%sle=\"%s\"} %d\n", name, labels, strconv.FormatFloat(le, 'g', -1, 64), cum)
	}
	cum += h.counts[len(durationBuckets)].Load()
	fmt.Fprintf(w, "%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, cum)
	braces := ""
	if labels != "" {
		braces = "{" + strings.TrimSuffix(labels, ",") + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n", name, braces, strconv.FormatFloat(float64(h.sumNs.Load())/1e9, 'g', -1, 64))
	fmt.Fprintf(w, "%s_count%s %d\n", name, braces, cum)
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
