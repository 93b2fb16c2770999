package nanootel_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	nano "github.com/domWinter/go-nano"
	"github.com/domWinter/go-nano/extra/nanootel"
)

// A server and two services traced with one Observer: a message to
// role:report reaches the report service, whose handler calls the math
// service with Act. The spans, kept in memory here, form one trace.
func Example() {
	exporter := tracetest.NewInMemoryExporter()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer provider.Shutdown(context.Background())
	obs := nanootel.NewObserver(
		nanootel.WithTracerProvider(provider),
		nanootel.WithPropagator(propagation.TraceContext{}),
	)
	quiet := slog.New(slog.DiscardHandler)

	server, err := nano.NewServerWithOptions(nano.ServerOptions{Observer: obs, Logger: quiet})
	if err != nil {
		panic(err)
	}
	serverAddr := serveOn(server.Serve)

	math := newExampleService(serverAddr, obs, quiet)
	math.Handle("role:math,cmd:sum", func(msg []byte) ([]byte, error) {
		var m struct{ Left, Right int }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int{"Result": m.Left + m.Right})
	})
	serveOn(math.Serve)

	report := newExampleService(serverAddr, obs, quiet)
	report.HandleContext("role:report", func(ctx context.Context, req *nano.Request) ([]byte, error) {
		// ctx holds the span of this message: the call is its child.
		return report.ActContext(ctx, []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`), "role:math,cmd:sum")
	})
	serveOn(report.Serve)
	waitResolved(serverAddr, "role:math,cmd:sum")
	waitResolved(serverAddr, "role:report")

	resp, err := http.Post("http://"+serverAddr+"/", "application/json", strings.NewReader(`{"Pattern":"role:report"}`))
	if err != nil {
		panic(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(strings.TrimSpace(string(answer)))

	// Shutdown waits for the messages in flight: every span has ended.
	report.Shutdown(context.Background())
	math.Shutdown(context.Background())
	server.Shutdown(context.Background())
	printTree(exporter.GetSpans(), trace.SpanID{}, "")

	// Output:
	// {"Result":3}
	// nano.proxy role:report
	//   nano.handle role:report
	//     nano.act role:math,cmd:sum
	//       nano.handle role:math,cmd:sum
}

// newExampleService returns a service that registers at the server at
// serverAddr, traced by obs.
func newExampleService(serverAddr string, obs nano.Observer, logger *slog.Logger) *nano.Service {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:     "127.0.0.1:0", // advertise the port of the listener it serves on
		Server:   serverAddr,
		Observer: obs,
		Logger:   logger,
	})
	if err != nil {
		panic(err)
	}
	return svc
}

// serveOn serves with serve on a new loopback listener, in the
// background, and returns the listener's address.
func serveOn(serve func(net.Listener) error) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go serve(l)
	return l.Addr().String()
}

// waitResolved waits until the server at serverAddr routes pattern.
func waitResolved(serverAddr, pattern string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + serverAddr + "/resolve?pattern=" + url.QueryEscape(pattern))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	panic(pattern + " was not registered")
}

// printTree prints the names of the spans whose parent is parent, each
// followed by its children, indented.
func printTree(spans tracetest.SpanStubs, parent trace.SpanID, indent string) {
	var children tracetest.SpanStubs
	for _, s := range spans {
		if s.Parent.SpanID() == parent {
			children = append(children, s)
		}
	}
	slices.SortFunc(children, func(a, b tracetest.SpanStub) int { return cmp.Compare(a.Name, b.Name) })
	for _, s := range children {
		fmt.Println(indent + s.Name)
		printTree(spans, s.SpanContext.SpanID(), indent+"  ")
	}
}
