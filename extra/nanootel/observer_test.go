package nanootel_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	nano "github.com/domWinter/go-nano"
	"github.com/domWinter/go-nano/extra/nanootel"
)

// How a span ends, by the op, the status and the error it ends with.
func TestEnd(t *testing.T) {
	timeout := fmt.Errorf("%w: %w", nano.ErrTimeout, context.DeadlineExceeded)
	tests := []struct {
		name      string
		op        nano.Op
		status    int
		err       error
		wantKind  trace.SpanKind
		wantError string // error.type; empty: the span did not fail
		recorded  bool   // the error is recorded
	}{
		{"act answered", nano.OpAct, 200, nil, trace.SpanKindClient, "", false},
		{"act not found", nano.OpAct, 404, &nano.Error{Status: 404, Err: nano.ErrNoService}, trace.SpanKindClient, "404", true},
		{"act timed out", nano.OpAct, 0, timeout, trace.SpanKindClient, "timeout", true},
		{"act canceled", nano.OpAct, 0, fmt.Errorf("call canceled: %w", context.Canceled), trace.SpanKindClient, "canceled", true},
		{"act unreachable", nano.OpAct, 0, fmt.Errorf("%w: connection refused", nano.ErrServiceUnavailable), trace.SpanKindClient, "unavailable", true},
		{"act other", nano.OpAct, 0, errors.New("something else"), trace.SpanKindClient, "_OTHER", true},
		{"proxy relays 404", nano.OpProxy, 404, nil, trace.SpanKindServer, "", false},
		{"proxy relays 503", nano.OpProxy, 503, nil, trace.SpanKindServer, "503", false},
		{"proxy fails", nano.OpProxy, 502, fmt.Errorf("%w: no instance answered", nano.ErrServiceUnavailable), trace.SpanKindServer, "502", true},
		{"handle answers", nano.OpHandle, 200, nil, trace.SpanKindServer, "", false},
		{"handle refuses", nano.OpHandle, 400, &nano.Error{Status: 400, Message: "Left must be a number"}, trace.SpanKindServer, "400", true},
		{"handle timed out", nano.OpHandle, 504, timeout, trace.SpanKindServer, "504", true},
		{"caller hung up", nano.OpHandle, 499, context.Canceled, trace.SpanKindServer, "499", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs, exp := newRecorder(t)
			_, end := obs.Start(context.Background(), tt.op, "role:math,cmd:sum", http.Header{})
			end(tt.status, tt.err)

			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans ended, want 1", len(spans))
			}
			s := spans[0]
			if want := "nano." + tt.op.String() + " role:math,cmd:sum"; s.Name != want || s.SpanKind != tt.wantKind {
				t.Errorf("span %q of kind %v, want %q of kind %v", s.Name, s.SpanKind, want, tt.wantKind)
			}
			wantStatus := attribute.Value{}
			if tt.status != 0 {
				wantStatus = attribute.IntValue(tt.status)
			}
			if got := attr(s, "http.response.status_code"); got != wantStatus {
				t.Errorf("http.response.status_code %v, want %v", got.Emit(), wantStatus.Emit())
			}
			if got := attr(s, "error.type").AsString(); got != tt.wantError {
				t.Errorf("error.type %q, want %q", got, tt.wantError)
			}
			wantCode := codes.Unset
			if tt.wantError != "" {
				wantCode = codes.Error
			}
			if s.Status.Code != wantCode {
				t.Errorf("status %v, want %v", s.Status, wantCode)
			}
			if recorded := len(s.Events) == 1 && s.Events[0].Name == "exception"; recorded != tt.recorded {
				t.Errorf("events %v; error recorded: %v, want %v", s.Events, recorded, tt.recorded)
			}
			if tt.recorded && s.Status.Description != tt.err.Error() {
				t.Errorf("status description %q, want %q", s.Status.Description, tt.err.Error())
			}
		})
	}
}

// Start takes the parent of a proxy or handle span from the header when
// the context holds none, and Inject writes the context's span into a
// header.
func TestStartAndInject(t *testing.T) {
	obs, exp := newRecorder(t)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, endHandle := obs.Start(context.Background(), nano.OpHandle, "role:report", http.Header{"Traceparent": {parent}})
	ctx, endAct := obs.Start(ctx, nano.OpAct, "role:math,cmd:sum", nil)
	out := http.Header{"Traceparent": {parent}} // as a server copies it from its client
	obs.Inject(ctx, out)
	endAct(200, nil)
	endHandle(200, nil)

	spans := spansByName(t, exp, "nano.handle role:report", "nano.act role:math,cmd:sum")
	handle, act := spans["nano.handle role:report"], spans["nano.act role:math,cmd:sum"]
	if got := handle.Parent; got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.SpanID().String() != "00f067aa0ba902b7" || !got.IsRemote() {
		t.Errorf("parent of the handle span is %v, want the header's", got)
	}
	childOf(t, spans, "nano.act role:math,cmd:sum", "nano.handle role:report")
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + act.SpanContext.SpanID().String() + "-01"
	if got := out.Values("Traceparent"); len(got) != 1 || got[0] != want {
		t.Errorf("Inject wrote Traceparent %q, want [%s]", got, want)
	}
}

// A proxy span is the child of the span a middleware around the server's
// handler started, as an HTTP tracing middleware does, rather than of
// the span the header names.
func TestParentFromContext(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(context.Background())
	prop := propagation.TraceContext{}
	obs := nanootel.NewObserver(nanootel.WithTracerProvider(tp), nanootel.WithPropagator(prop))

	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Observer: obs, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tracer := tp.Tracer("middleware")
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			srv.Handler().ServeHTTP(w, r)
			return
		}
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, "POST /", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		srv.Handler().ServeHTTP(w, r.WithContext(ctx))
	}))
	defer ts.Close()
	defer srv.Shutdown(context.Background())
	addr := ts.Listener.Addr().String()
	b := newService(t, addr, obs, 0)
	add(t, b, "role:math,cmd:sum", sum)
	serve(t, b, addr, "role:math,cmd:sum")

	header := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	if status, body := post(t, ts.URL, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`, header); status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", status, body)
	}
	b.Shutdown(context.Background())
	ts.Close() // waits for the middleware's span to end

	spans := spansByName(t, exp, "POST /", "nano.proxy role:math,cmd:sum", "nano.handle role:math,cmd:sum")
	if got := spans["POST /"].Parent.SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("parent of the middleware's span is %s, want the client's", got)
	}
	childOf(t, spans, "nano.proxy role:math,cmd:sum", "POST /")
	childOf(t, spans, "nano.handle role:math,cmd:sum", "nano.proxy role:math,cmd:sum")
}
