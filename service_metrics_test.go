package nano_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	nano "github.com/domWinter/go-nano"
)

// Tests of a service's GET /metrics and of handler panics.

// scrape returns the metric families of GET /metrics at addr, checked by
// parseMetrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := readAll(resp)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return parseMetrics(t, text)
}

// series returns the series of the family name whose labels are exactly
// labels (name, value, name, value...), or nil. It fails t when the
// family is not of type kind.
func series(t *testing.T, families map[string]*dto.MetricFamily, name string, kind dto.MetricType, labels ...string) *dto.Metric {
	t.Helper()
	f := families[name]
	if f == nil {
		return nil
	}
	if f.GetType() != kind {
		t.Fatalf("%s is a %v; want a %v", name, f.GetType(), kind)
	}
	var want []string
	for i := 0; i+1 < len(labels); i += 2 {
		want = append(want, labels[i]+"="+labels[i+1])
	}
	slices.Sort(want)
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return m
		}
	}
	return nil
}

// counterValue is the value of a counter's series, 0 when it is absent.
func counterValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	return series(t, families, name, dto.MetricType_COUNTER, labels...).GetCounter().GetValue()
}

// gaugeValue is the value of a gauge without labels; it fails t when the
// gauge is absent.
func gaugeValue(t *testing.T, families map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	m := series(t, families, name, dto.MetricType_GAUGE)
	if m == nil {
		t.Fatalf("no %s", name)
	}
	return m.GetGauge().GetValue()
}

func okHandler(context.Context, *nano.Request) ([]byte, error) { return []byte(`"ok"`), nil }

func badHandler(context.Context, *nano.Request) ([]byte, error) {
	return nil, &nano.Error{Status: http.StatusBadRequest, Message: "Left must be a number"}
}

func panicHandler(context.Context, *nano.Request) ([]byte, error) { panic("kaboom") }

// TestServiceMetrics: a service's GET /metrics, read by Prometheus's
// parser, counts its handlers' calls by registered pattern and status,
// their durations by pattern, the handlers running now, and the calls its
// Act made by pattern and outcome. The server's /metrics parses too.
func TestServiceMetrics(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})

	// The services the measured one calls with Act.
	late := newHeldHandler()
	late.linger = 300 * time.Millisecond // the caller's deadline passes first
	startHandlers(t, addr, map[string]nano.Handler{
		"role:t,cmd:ok":   okHandler,
		"role:t,cmd:bad":  badHandler,
		"role:t,cmd:slow": late.handle,
	})
	registerAt(t, addr, "role:t,cmd:dead", deadAddr(t))
	waitRegistered(t, addr, "role:t,cmd:dead")

	entered, release := make(chan struct{}), make(chan struct{})
	svc, svcAddr := startHandlers(t, addr, map[string]nano.Handler{
		"role:m,cmd:ok":   okHandler,
		"role:m,cmd:bad":  badHandler,
		"role:m,cmd:boom": panicHandler,
		"role:m,cmd:hold": func(context.Context, *nano.Request) ([]byte, error) {
			close(entered)
			<-release
			return []byte(`"held"`), nil
		},
	})

	for _, m := range []struct {
		msg  string
		want int
	}{
		{`{"Pattern":"role:m,cmd:ok"}`, http.StatusOK},
		{`{"Pattern":"role:m,cmd:ok,extra:1"}`, http.StatusOK},
		{`{"Pattern":"role:m,cmd:bad"}`, http.StatusBadRequest},
		{`{"Pattern":"role:m,cmd:boom"}`, http.StatusInternalServerError},
	} {
		if status, body := post(t, "http://"+addr+"/", m.msg); status != m.want {
			t.Fatalf("%s: %d %s; want %d", m.msg, status, body, m.want)
		}
	}

	held := make(chan int, 1)
	go func() {
		resp, err := http.Post("http://"+svcAddr+"/", "application/json", strings.NewReader(`{"Pattern":"role:m,cmd:hold"}`))
		if err != nil {
			held <- 0
			return
		}
		readAll(resp)
		held <- resp.StatusCode
	}()
	<-entered
	heldSince := time.Now()
	if n := gaugeValue(t, scrape(t, svcAddr), "nano_handlers_in_flight"); n != 1 {
		t.Errorf("nano_handlers_in_flight = %v while a handler is held; want 1", n)
	}
	time.Sleep(50 * time.Millisecond)
	heldFor := time.Since(heldSince) // the handler ran longer
	close(release)
	if status := <-held; status != http.StatusOK {
		t.Fatalf("the held message: %d", status)
	}

	acts := []struct {
		pattern, outcome string
		ctx              func() (context.Context, context.CancelFunc)
	}{
		{"role:t,cmd:ok", "ok", nil},
		{"role:t,cmd:bad", "error", nil},
		{"role:none", "no_service", nil},
		{"role:t,cmd:slow", "timeout", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), 100*time.Millisecond)
		}},
		{"role:t,cmd:slow", "canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"role:t,cmd:dead", "unavailable", nil},
	}
	for _, a := range acts {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		if a.ctx != nil {
			ctx, cancel = a.ctx()
		}
		_, err := svc.ActContext(ctx, []byte(`{"Pattern":"`+a.pattern+`"}`), a.pattern)
		cancel()
		if (err == nil) != (a.outcome == "ok") {
			t.Errorf("Act %s: %v; want the outcome %s", a.pattern, err, a.outcome)
		}
	}

	m := scrape(t, svcAddr)
	t.Run("nano_handlers_in_flight", func(t *testing.T) {
		if n := gaugeValue(t, m, "nano_handlers_in_flight"); n != 0 {
			t.Errorf("nano_handlers_in_flight = %v once every handler returned; want 0", n)
		}
	})
	t.Run("nano_handler_calls_total", func(t *testing.T) {
		for _, c := range []struct {
			pattern, status string
			want            float64
		}{
			{"role:m,cmd:ok", "200", 2},
			{"role:m,cmd:bad", "400", 1},
			{"role:m,cmd:boom", "500", 1},
			{"role:m,cmd:hold", "200", 1},
		} {
			if got := counterValue(t, m, "nano_handler_calls_total", "pattern", c.pattern, "status", c.status); got != c.want {
				t.Errorf(`nano_handler_calls_total{pattern=%q,status=%q} = %v; want %v`, c.pattern, c.status, got, c.want)
			}
		}
		if got := counterValue(t, m, "nano_handler_calls_total", "pattern", "role:m,cmd:ok,extra:1", "status", "200"); got != 0 {
			t.Errorf("calls counted under the message's pattern, not the handler's")
		}
	})
	t.Run("nano_handler_duration_seconds", func(t *testing.T) {
		for _, c := range []struct {
			pattern string
			count   uint64
			atLeast time.Duration
		}{
			{"role:m,cmd:ok", 2, 0},
			{"role:m,cmd:bad", 1, 0},
			{"role:m,cmd:boom", 1, 0},
			{"role:m,cmd:hold", 1, heldFor},
		} {
			h := series(t, m, "nano_handler_duration_seconds", dto.MetricType_HISTOGRAM, "pattern", c.pattern).GetHistogram()
			if h.GetSampleCount() != c.count || h.GetSampleSum() < c.atLeast.Seconds() {
				t.Errorf("pattern %s: %d durations summing to %vs; want %d, summing to at least %v", c.pattern, h.GetSampleCount(), h.GetSampleSum(), c.count, c.atLeast)
			}
			buckets := h.GetBucket()
			if len(buckets) == 0 || buckets[len(buckets)-1].GetCumulativeCount() != h.GetSampleCount() {
				t.Errorf("pattern %s: the last bucket does not hold every duration: %v", c.pattern, buckets)
			}
		}
	})
	t.Run("nano_act_calls_total", func(t *testing.T) {
		for _, a := range acts {
			if got := counterValue(t, m, "nano_act_calls_total", "pattern", a.pattern, "outcome", a.outcome); got != 1 {
				t.Errorf(`nano_act_calls_total{pattern=%q,outcome=%q} = %v; want 1`, a.pattern, a.outcome, got)
			}
		}
	})
	t.Run("server", func(t *testing.T) {
		if got := counterValue(t, scrape(t, addr), "nano_requests_total", "pattern", "role:m,cmd:ok", "status", "200"); got != 2 {
			t.Errorf(`the server's nano_requests_total{pattern="role:m,cmd:ok",status="200"} = %v; want 2`, got)
		}
	})
}

// logRecords keeps the log records it handles.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record // guarded by mu
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// matching returns the records whose message holds msg.
func (l *logRecords) matching(msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.records {
		if strings.Contains(r.Message, msg) {
			out = append(out, r)
		}
	}
	return out
}

// attr returns the value of the attribute key of r, as a string.
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// TestHandlerPanic: a handler that panics is answered with 500 and a JSON
// error that shows no stack, logged once at error level with its stack,
// and the service goes on serving, whether the message came through the
// server, straight to the service or from Act.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	raw := func(to func(svcAddr string) string) func(t *testing.T, svcAddr, pattern string) {
		return func(t *testing.T, svcAddr, pattern string) {
			status, body := post(t, "http://"+to(svcAddr)+"/", `{"Pattern":"`+pattern+`"}`)
			if status != http.StatusInternalServerError || strings.Contains(errorBody(t, body), "goroutine") {
				t.Errorf("got %d %s; want 500 with a JSON error and no stack", status, body)
			}
		}
	}
	act := func(t *testing.T, _, pattern string) {
		c := newClient(t, nano.ClientOptions{Server: addr, Timeout: 5 * time.Second})
		_, err := c.Act([]byte(`{"Pattern":"`+pattern+`"}`), pattern)
		if e, ok := errors.AsType[*nano.Error](err); !ok || e.Status != http.StatusInternalServerError || !errors.Is(err, nano.ErrHandler) {
			t.Errorf("Act got %v; want a 500 *Error that unwraps to ErrHandler", err)
		}
	}
	for i, tc := range []struct {
		name string
		call func(t *testing.T, svcAddr, pattern string)
	}{
		{"through the server", raw(func(string) string { return addr })},
		{"to the service", raw(func(svcAddr string) string { return svcAddr })},
		{"act", act},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &logRecords{}
			pattern := fmt.Sprintf("role:panic,case:%d", i)
			okPattern := fmt.Sprintf("role:fine,case:%d", i)
			_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{pattern: panicHandler, okPattern: okHandler},
				func(o *nano.ServiceOptions) { o.Logger = slog.New(logs) })
			tc.call(t, svcAddr, pattern)
			for _, to := range []string{addr, svcAddr} {
				if status, body := post(t, "http://"+to+"/", `{"Pattern":"`+okPattern+`"}`); status != http.StatusOK {
					t.Errorf("after the panic: %d %s; want 200", status, body)
				}
			}
			panics := logs.matching("panicked")
			if len(panics) != 1 {
				t.Fatalf("%d log records of the panic; want 1", len(panics))
			}
			r := panics[0]
			if r.Level != slog.LevelError || !strings.Contains(attr(r, "stack"), "goroutine") {
				t.Errorf("the record of the panic is at level %v with stack %q; want level ERROR and the panic's stack", r.Level, attr(r, "stack"))
			}
		})
	}
}
