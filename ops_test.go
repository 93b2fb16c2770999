package nano_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	nano "github.com/domWinter/go-nano"
)

// checkMetricsText fails t unless text is in the Prometheus text format
// (see parseMetrics), and returns its sample lines.
func checkMetricsText(t *testing.T, text string) map[string]bool {
	t.Helper()
	parseMetrics(t, text)
	samples := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if !strings.HasPrefix(line, "#") {
			samples[line] = true
		}
	}
	return samples
}

// parseMetrics reads text with Prometheus's own parser of the text format
// and returns its metric families by name. It fails t when the parser
// refuses the text, when a family lacks its HELP or TYPE line, or when a
// series appears twice (which the parser leaves to its callers to check).
func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("not in the Prometheus text format: %v\n%s", err, text)
	}
	for name, f := range families {
		if f.Help == nil || f.GetType() == dto.MetricType_UNTYPED {
			t.Errorf("%s has no HELP or no TYPE", name)
		}
		seen := map[string]bool{}
		for _, m := range f.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			slices.Sort(labels)
			series := name + "{" + strings.Join(labels, ",") + "}"
			if seen[series] {
				t.Errorf("%s appears twice", series)
			}
			seen[series] = true
		}
	}
	return families
}

func TestServerMetrics(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	before := metricsOf(t, addr)
	for range 3 {
		post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum,extra:1","Left":1,"Right":2}`)
	}
	post(t, "http://"+addr+"/", `{"Pattern":"role:unknown"}`)
	post(t, "http://"+addr+"/", `{"Pattern":`)
	post(t, "http://"+addr+"/", `{"Pattern":"role:weird\"\\"}`)

	samples := metricsOf(t, addr)
	count := func(samples map[string]bool, prefix string) int {
		for s := range samples {
			if rest, ok := strings.CutPrefix(s, prefix+" "); ok {
				var n int
				fmt.Sscan(rest, &n)
				return n
			}
		}
		return 0
	}
	for _, c := range []struct {
		sample string
		added  int
	}{
		{`nano_requests_total{pattern="role:math,cmd:sum",status="200"}`, 3},
		{`nano_requests_total{pattern="",status="404"}`, 2},
		{`nano_requests_total{pattern="",status="400"}`, 1},
		{`nano_upstream_duration_seconds_count`, 3},
		{`nano_upstream_duration_seconds_bucket{le="+Inf"}`, 3},
	} {
		if got := count(samples, c.sample) - count(before, c.sample); got != c.added {
			t.Errorf("%s went up by %d; want %d", c.sample, got, c.added)
		}
	}
	for _, want := range []string{"nano_patterns 1", `nano_instances{pattern="role:math,cmd:sum"} 1`, "nano_registry_ready 1", "nano_registry_errors_total 0"} {
		if !samples[want] {
			t.Errorf("no sample %q", want)
		}
	}
}

func metricsOf(t *testing.T, addr string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := readAll(resp)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return checkMetricsText(t, text)
}

func TestServerListsServices(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{TTL: time.Minute})
	_, svcAddr := startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum, "role:math": sum})
	waitRegistered(t, addr, "role:math,cmd:sum", "role:math")
	status, body := do(t, http.MethodGet, "http://"+addr+"/services", "", nil)
	var got struct {
		Patterns []struct {
			Pattern   string
			Instances []struct {
				ServiceAddress string
				Expires        time.Time
			}
		}
		Ready bool
		TTL   float64
	}
	if err := json.Unmarshal([]byte(body), &got); status != 200 || err != nil {
		t.Fatalf("GET /services: %d %s (%v)", status, body, err)
	}
	if len(got.Patterns) != 2 || got.Patterns[0].Pattern != "role:math" || got.Patterns[1].Pattern != "role:math,cmd:sum" || !got.Ready || got.TTL != 60 {
		t.Fatalf("GET /services: %s", body)
	}
	for _, p := range got.Patterns {
		if len(p.Instances) != 1 || p.Instances[0].ServiceAddress != svcAddr || time.Until(p.Instances[0].Expires) < 30*time.Second {
			t.Fatalf("pattern %s: instances %+v", p.Pattern, p.Instances)
		}
	}
	if status, _ := post(t, "http://"+addr+"/services", `{}`); status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /services: %d", status)
	}
}

func TestServiceHealth(t *testing.T) {
	// The service starts before its server: alive, but not ready until it
	// has registered.
	l := listen(t)
	serverAddr := l.Addr().String()
	l.Close()
	_, svcAddr := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) {
		o.RetryInterval = 50 * time.Millisecond
	})
	get := func(path string) int {
		status, _ := do(t, http.MethodGet, "http://"+svcAddr+path, "", nil)
		return status
	}
	eventually(t, "the service answers /healthz", func() bool { return get("/healthz") == 200 })
	if status, body := do(t, http.MethodGet, "http://"+svcAddr+"/readyz", "", nil); status != 503 || !strings.Contains(errorBody(t, body), "not registered") {
		t.Fatalf("/readyz before the server runs: %d %s", status, body)
	}
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", serverAddr)
	if err != nil {
		t.Skipf("the server's port was taken meanwhile: %v", err)
	}
	go srv.Serve(l2)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	eventually(t, "the service is ready", func() bool { return get("/readyz") == 200 })
	// A message posted to those paths still reaches the handlers.
	if status, body := post(t, "http://"+svcAddr+"/healthz", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != 200 || body != `{"Result":3}` {
		t.Fatalf("POST /healthz: %d %s", status, body)
	}
}

func TestNanoServerProgram(t *testing.T) {
	bin := buildProgram(t, ".", "./cmd/nano-server")
	for _, registry := range []string{"", testRedis.Addr} {
		t.Run("redis="+registry, func(t *testing.T) {
			port, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			p := startProgram(t, bin, fmt.Sprintf("NANO_PORT=%d", port), "NANO_REDIS_ADDR="+registry,
				"NANO_TOKEN=s3cret", "NANO_TTL=5s", "NANO_KEY_PREFIX="+fmt.Sprintf("nanoprog:%d:", time.Now().UnixNano()))
			p.waitOutput(t, "listening")
			for _, want := range []string{fmt.Sprintf(":%d", port), "registry="} {
				if !strings.Contains(p.out.String(), want) {
					t.Errorf("the startup line lacks %q:\n%s", want, p.out.String())
				}
			}
			bearer := http.Header{"Authorization": {"Bearer s3cret"}}
			for _, path := range []string{"/healthz", "/readyz", "/metrics", "/services"} {
				if status, body := do(t, http.MethodGet, "http://"+addr+path, "", bearer); status != 200 {
					t.Errorf("GET %s: %d %s", path, status, body)
				}
			}
			if status, _ := do(t, http.MethodGet, "http://"+addr+"/services", "", nil); status != http.StatusUnauthorized {
				t.Errorf("GET /services without the token: %d", status)
			}
			reg := `{"Pattern":"role:x","ServiceAddress":"127.0.0.1:1"}`
			if status, _ := post(t, "http://"+addr+"/register", reg); status != http.StatusUnauthorized {
				t.Errorf("register without the token: %d", status)
			}
			status, body := do(t, http.MethodPost, "http://"+addr+"/register", reg, http.Header{"Authorization": {"Bearer s3cret"}})
			if status != 200 || !strings.Contains(body, `"TTL":5`) {
				t.Errorf("register with the token: %d %s", status, body)
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-p.done:
				p.done <- err
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("still running 10 s after SIGTERM")
			}
			if !strings.Contains(p.out.String(), "stopped") {
				t.Errorf("no shutdown line:\n%s", p.out.String())
			}
		})
	}
	t.Run("registry unreachable", func(t *testing.T) {
		dead, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		p := startProgram(t, bin, fmt.Sprintf("NANO_REDIS_ADDR=127.0.0.1:%d", dead), "NANO_REGISTRY_TIMEOUT=300ms")
		select {
		case err := <-p.done:
			p.done <- err
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit %v; want status 1\n%s", err, p.out.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still running without its registry")
		}
	})
	t.Run("shutdown delay and second signal", func(t *testing.T) {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p := startProgram(t, bin, fmt.Sprintf("NANO_PORT=%d", port), "NANO_SHUTDOWN_DELAY=1m")
		p.waitOutput(t, "listening")
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.waitOutput(t, "stopping soon")
		// During the delay it still serves, and says it is not ready.
		if status, body := do(t, http.MethodGet, "http://"+addr+"/healthz", "", nil); status != 200 {
			t.Fatalf("during the shutdown delay: %d %s", status, body)
		}
		if status, body := do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil); status != http.StatusServiceUnavailable {
			t.Errorf("/readyz during the shutdown delay: %d %s; want 503", status, body)
		}
		// A second signal ends it at once.
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(10 * time.Second):
			t.Fatal("a second signal did not end it")
		}
	})
	t.Run("bad configuration", func(t *testing.T) {
		for _, c := range []struct {
			args  []string
			env   string
			names string // what the message must name
		}{
			{nil, "NANO_TTL=soon", "NANO_TTL"},
			{[]string{"-ttl", "-5s"}, "", "TTL"},
			{[]string{"-ttl", "1ms"}, "", "TTL"},
			{[]string{"-redis-master", "mymaster"}, "", "-redis-master"},
			{[]string{"-redis-db", "2"}, "", "-redis-db"},
			{[]string{"-redis", testRedis.Addr, "-redis-db", "-1"}, "", "-redis-db"},
			{[]string{"-shutdown-delay", "-1s"}, "", "-shutdown-delay"},
			{[]string{"-shutdown-timeout", "0s"}, "", "-shutdown-timeout"},
			{[]string{"-host", "nonsense:1"}, "", "Addr"},
			{[]string{"-original-keys"}, "", "OriginalKeys"},
		} {
			p := startProgramArgs(t, bin, append([]string{"-port", "0"}, c.args...), c.env)
			select {
			case err := <-p.done:
				p.done <- err
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(p.out.String(), c.names) {
					t.Errorf("%q %s: exit %v with output %q; want status 2 and a message naming %s", c.args, c.env, err, p.out.String(), c.names)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%q %s: still running with a bad configuration", c.args, c.env)
			}
		}
	})
}

// logLines collects the messages of the log records it handles.
type logLines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logLines) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelInfo }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, msg) {
			n++
		}
	}
	return n
}

func (l *logLines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// TestServerLogs checks the server's log at the default level: a line per
// registration, deregistration, expiry and ejection, none per message.
func TestServerLogs(t *testing.T) {
	lines := &logLines{}
	_, addr := startServer(t, nano.ServerOptions{Logger: slog.New(lines), TTL: 300 * time.Millisecond})
	svc, _ := startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	before := lines.len()
	for range 100 {
		post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`)
		post(t, "http://"+addr+"/", `{"Pattern":"role:nothing"}`)
	}
	if n := lines.len() - before; n != 0 {
		t.Errorf("200 messages logged %d lines at info level: %q", n, lines.msgs[before:])
	}
	if n := lines.count("service registered"); n != 1 {
		t.Errorf("%d lines for one registration (renewals must not log)", n)
	}
	svc.Shutdown(t.Context())
	eventually(t, "the deregistration is logged", func() bool { return lines.count("service deregistered") == 1 })

	// An instance that registers and dies: its registration expires; and
	// two that refuse connections: the server tries both, ejects one (the
	// other stays, or the pattern would be empty) and answers 503.
	dead, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{fmt.Sprintf("127.0.0.1:%d", dead), deadAddr(t)} {
		status, body := post(t, "http://"+addr+"/register", fmt.Sprintf(`{"Pattern":"role:gone","ServiceAddress":%q}`, a))
		if status != 200 {
			t.Fatalf("register: %d %s", status, body)
		}
	}
	if status, _ := post(t, "http://"+addr+"/", `{"Pattern":"role:gone"}`); status != http.StatusServiceUnavailable {
		t.Errorf("both instances refusing: %d; want 503", status)
	}
	if n := lines.count("instance ejected"); n != 1 {
		t.Errorf("%d lines for one ejection", n)
	}
	post(t, "http://"+addr+"/register", fmt.Sprintf(`{"Pattern":"role:expiring","ServiceAddress":"127.0.0.1:%d"}`, dead))
	eventually(t, "the expiry is logged", func() bool { return lines.count("registration expired") >= 1 })
}

// TestMetricsFollowTheRegistry: the counters of a deregistered pattern
// leave /metrics.
func TestMetricsFollowTheRegistry(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	_, svcAddr := startService(t, addr, map[string]nano.HandlerFunc{"role:brief": sum}, func(o *nano.ServiceOptions) { o.PeerTTL = -1 })
	waitAnswer(t, addr, `{"Pattern":"role:brief","Left":1,"Right":1}`, `{"Result":2}`)
	series := `nano_requests_total{pattern="role:brief",status="200"}`
	has := func() bool {
		for s := range metricsOf(t, addr) {
			if strings.HasPrefix(s, series) {
				return true
			}
		}
		return false
	}
	if !has() {
		t.Fatalf("no %s", series)
	}
	if status, body := post(t, "http://"+addr+"/deregister", fmt.Sprintf(`{"Pattern":"role:brief","ServiceAddress":%q}`, svcAddr)); status != 200 {
		t.Fatalf("deregister: %d %s", status, body)
	}
	if has() {
		t.Fatalf("%s still shown after the pattern left", series)
	}
}
