package nanootel_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	nano "github.com/domWinter/go-nano"
	"github.com/domWinter/go-nano/extra/nanootel"
)

// newRecorder returns an Observer that carries W3C Trace Context and
// records its spans, once ended, in the exporter returned with it.
func newRecorder(t *testing.T) (*nanootel.Observer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	obs := nanootel.NewObserver(
		nanootel.WithTracerProvider(tp),
		nanootel.WithPropagator(propagation.TraceContext{}),
	)
	return obs, exp
}

// testLogger discards logs unless NANO_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("NANO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer serves a nano server with the embedded registry and obs (nil
// for none) on a loopback port until the test ends, and returns it with
// its address.
func startServer(t *testing.T, obs nano.Observer) (*nano.Server, string) {
	t.Helper()
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Observer: obs, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, l.Addr().String()
}

// newService returns a service registering at the server at serverAddr,
// with obs (nil for none) and peerTTL, shut down when the test ends. Its
// handlers are set before serve starts it.
func newService(t *testing.T, serverAddr string, obs nano.Observer, peerTTL time.Duration) *nano.Service {
	t.Helper()
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:     "127.0.0.1:0",
		Server:   serverAddr,
		PeerTTL:  peerTTL,
		Observer: obs,
		Logger:   testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	return svc
}

// serve serves svc on a loopback port and waits until the server at
// serverAddr routes each of patterns to it.
func serve(t *testing.T, svc *nano.Service, serverAddr string, patterns ...string) {
	t.Helper()
	go svc.Serve(listen(t))
	for _, p := range patterns {
		waitRegistered(t, serverAddr, p)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitRegistered waits until the server at serverAddr resolves pattern to
// itself. It asks GET /resolve, which no Observer sees.
func waitRegistered(t *testing.T, serverAddr, pattern string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if resolves(serverAddr, pattern) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not registered in time", pattern)
		}
	}
}

func resolves(serverAddr, pattern string) bool {
	resp, err := http.Get("http://" + serverAddr + "/resolve?pattern=" + url.QueryEscape(pattern))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var res struct{ Pattern string }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&res) == nil && res.Pattern == pattern
}

// post sends body to url with the header fields of header, as a plain
// HTTP client does, and returns the status and body of the answer.
func post(t *testing.T, url, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Handlers of the services the tests chain.

// sum answers {"Result": Left+Right}.
func sum(_ context.Context, req *nano.Request) ([]byte, error) {
	var m struct{ Left, Right int }
	if err := json.Unmarshal(req.Body, &m); err != nil {
		return nil, &nano.Error{Status: http.StatusBadRequest, Message: "sum needs Left and Right"}
	}
	return json.Marshal(map[string]int{"Result": m.Left + m.Right})
}

// fail always fails, as a handler with a bug does.
func fail(context.Context, *nano.Request) ([]byte, error) {
	return nil, errors.New("cannot sum today")
}

// relay returns a handler that calls, with svc's Act and its own
// context, the pattern named by the message's Call field, and answers
// with what that returned.
func relay(svc *nano.Service) nano.Handler {
	return func(ctx context.Context, req *nano.Request) ([]byte, error) {
		var m struct{ Call string }
		if err := json.Unmarshal(req.Body, &m); err != nil || m.Call == "" {
			return nil, &nano.Error{Status: http.StatusBadRequest, Message: "relay needs Call"}
		}
		msg, err := json.Marshal(map[string]any{"Pattern": m.Call, "Left": 1, "Right": 2})
		if err != nil {
			return nil, err
		}
		return svc.ActContext(ctx, msg, m.Call)
	}
}

// A chain is a nano server and two services: a message to role:report
// goes from a client through the server to service A, whose handler calls
// the pattern the message names with Act; service B handles that call
// (role:math,cmd:sum answers, role:math,cmd:fail fails).
type chain struct {
	server string // the server's address
	stop   func() // shuts the services and the server down, draining them
}

// Modes of the Act calls of service A in a chain.
const (
	direct  = "direct"         // to B, found with GET /resolve
	through = "through server" // through the server (peer cache off)
)

// startChain starts a chain whose processes trace with obs (nil for none),
// with service A's Act calls made in mode.
func startChain(t *testing.T, obs nano.Observer, mode string) chain {
	t.Helper()
	srv, addr := startServer(t, obs)
	b := newService(t, addr, obs, 0)
	add(t, b, "role:math,cmd:sum", sum)
	add(t, b, "role:math,cmd:fail", fail)
	serve(t, b, addr, "role:math,cmd:sum", "role:math,cmd:fail")

	a := newService(t, addr, obs, peerTTL(mode))
	add(t, a, "role:report", relay(a))
	serve(t, a, addr, "role:report")

	return chain{server: addr, stop: func() {
		// Services first, so that they deregister at a server still up;
		// each Shutdown waits for the handlers in flight, so every span
		// has ended when stop returns.
		a.Shutdown(context.Background())
		b.Shutdown(context.Background())
		srv.Shutdown(context.Background())
	}}
}

// peerTTL is the PeerTTL option of a service whose Act calls are made in
// mode.
func peerTTL(mode string) time.Duration {
	if mode == through {
		return -1 // no peer cache
	}
	return 0
}

func add(t *testing.T, svc *nano.Service, pattern string, h nano.Handler) {
	t.Helper()
	if err := svc.HandleContext(pattern, h); err != nil {
		t.Fatal(err)
	}
}

// spansByName returns the ended spans of exp by name, failing the test
// unless their names are exactly want, each once.
func spansByName(t *testing.T, exp *tracetest.InMemoryExporter, want ...string) map[string]tracetest.SpanStub {
	t.Helper()
	byName := make(map[string]tracetest.SpanStub)
	var got []string
	for _, s := range exp.GetSpans() {
		got = append(got, s.Name)
		byName[s.Name] = s
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Fatalf("spans %q, want %q", got, want)
	}
	return byName
}

// childOf fails the test unless span child's parent is span parent.
func childOf(t *testing.T, spans map[string]tracetest.SpanStub, child, parent string) {
	t.Helper()
	c, p := spans[child], spans[parent]
	if c.Parent.TraceID() != p.SpanContext.TraceID() || c.Parent.SpanID() != p.SpanContext.SpanID() {
		t.Errorf("parent of %q is %s/%s, want %q (%s/%s)", child,
			c.Parent.TraceID(), c.Parent.SpanID(), parent, p.SpanContext.TraceID(), p.SpanContext.SpanID())
	}
}
