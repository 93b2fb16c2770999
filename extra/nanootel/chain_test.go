package nanootel_test

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// The spans of a message to role:report in a chain, before its Act.
const (
	proxyReport  = "nano.proxy role:report"
	handleReport = "nano.handle role:report"
)

// chainSpans checks that the spans of a message to role:report that
// calls the pattern call in mode form one trace: server, service A, A's
// Act, then service B, directly or through a second proxy span of the
// server.
func chainSpans(t *testing.T, spans map[string]tracetest.SpanStub, call, mode string) {
	t.Helper()
	traceID := spans[proxyReport].SpanContext.TraceID()
	for name, s := range spans {
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want %s", name, s.SpanContext.TraceID(), traceID)
		}
	}
	childOf(t, spans, handleReport, proxyReport)
	childOf(t, spans, "nano.act "+call, handleReport)
	if mode == direct {
		childOf(t, spans, "nano.handle "+call, "nano.act "+call)
	} else {
		childOf(t, spans, "nano.proxy "+call, "nano.act "+call)
		childOf(t, spans, "nano.handle "+call, "nano.proxy "+call)
	}
}

// chainNames returns the span names of a message to role:report that
// calls the pattern call in mode.
func chainNames(call, mode string) []string {
	names := []string{proxyReport, handleReport, "nano.act " + call, "nano.handle " + call}
	if mode == through {
		names = append(names, "nano.proxy "+call)
	}
	return names
}

func TestChainIsOneTrace(t *testing.T) {
	for _, mode := range []string{direct, through} {
		t.Run(mode, func(t *testing.T) {
			obs, exp := newRecorder(t)
			c := startChain(t, obs, mode)
			status, body := post(t, "http://"+c.server+"/", `{"Pattern":"role:report","Call":"role:math,cmd:sum"}`, nil)
			if status != http.StatusOK || strings.TrimSpace(body) != `{"Result":3}` {
				t.Fatalf("got %d %s, want 200 {\"Result\":3}", status, body)
			}
			c.stop()

			spans := spansByName(t, exp, chainNames("role:math,cmd:sum", mode)...)
			chainSpans(t, spans, "role:math,cmd:sum", mode)
			if root := spans[proxyReport]; root.Parent.IsValid() {
				t.Errorf("the client sent no trace context, yet %q has the parent %s", proxyReport, root.Parent.SpanID())
			}
			for name, s := range spans {
				wantKind := trace.SpanKindServer
				if strings.HasPrefix(name, "nano.act ") {
					wantKind = trace.SpanKindClient
				}
				if s.SpanKind != wantKind {
					t.Errorf("span %q is of kind %v, want %v", name, s.SpanKind, wantKind)
				}
				pattern := name[strings.IndexByte(name, ' ')+1:]
				want := []attribute.KeyValue{
					attribute.String("rpc.system.name", "nano"),
					attribute.String("rpc.method", pattern),
					attribute.Int("http.response.status_code", http.StatusOK),
				}
				if !sameAttributes(s.Attributes, want) {
					t.Errorf("span %q has the attributes %v, want %v", name, s.Attributes, want)
				}
				if s.Status.Code != codes.Unset || len(s.Events) != 0 {
					t.Errorf("span %q has the status %v and the events %v, want neither", name, s.Status, s.Events)
				}
			}
		})
	}
}

// The trace a client starts goes on through every hop, with its state.
func TestChainKeepsTheClientsTrace(t *testing.T) {
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)
	for _, mode := range []string{direct, through} {
		t.Run(mode, func(t *testing.T) {
			obs, exp := newRecorder(t)
			c := startChain(t, obs, mode)
			header := http.Header{
				"Traceparent": {"00-" + traceID + "-" + spanID + "-01"},
				"Tracestate":  {"congo=t61rcWkgMzE"},
			}
			if status, body := post(t, "http://"+c.server+"/", `{"Pattern":"role:report","Call":"role:math,cmd:sum"}`, header); status != http.StatusOK {
				t.Fatalf("got %d %s, want 200", status, body)
			}
			c.stop()

			spans := spansByName(t, exp, chainNames("role:math,cmd:sum", mode)...)
			chainSpans(t, spans, "role:math,cmd:sum", mode)
			root := spans[proxyReport]
			if got := root.Parent; got.TraceID().String() != traceID || got.SpanID().String() != spanID || !got.IsRemote() {
				t.Errorf("parent of %q is %s/%s (remote %v), want the client's %s/%s", proxyReport,
					got.TraceID(), got.SpanID(), got.IsRemote(), traceID, spanID)
			}
			for name, s := range spans {
				if got := s.SpanContext.TraceState().Get("congo"); got != "t61rcWkgMzE" {
					t.Errorf("span %q has the trace state %q, want the client's", name, s.SpanContext.TraceState())
				}
			}
		})
	}
}

// A handler's failure marks its span and the spans of the calls that
// waited for it.
func TestChainFailure(t *testing.T) {
	const call = "role:math,cmd:fail"
	for _, mode := range []string{direct, through} {
		t.Run(mode, func(t *testing.T) {
			obs, exp := newRecorder(t)
			c := startChain(t, obs, mode)
			if status, body := post(t, "http://"+c.server+"/", `{"Pattern":"role:report","Call":"`+call+`"}`, nil); status != http.StatusInternalServerError {
				t.Fatalf("got %d %s, want 500", status, body)
			}
			c.stop()

			spans := spansByName(t, exp, chainNames(call, mode)...)
			chainSpans(t, spans, call, mode)
			for name, s := range spans {
				if s.Status.Code != codes.Error {
					t.Errorf("span %q has the status %v, want Error", name, s.Status)
				}
				if got := attr(s, "error.type"); got != attribute.StringValue("500") {
					t.Errorf("span %q has error.type %v, want 500", name, got.Emit())
				}
				if got := attr(s, "http.response.status_code"); got != attribute.IntValue(http.StatusInternalServerError) {
					t.Errorf("span %q has http.response.status_code %v, want 500", name, got.Emit())
				}
			}
			// The spans that saw the error itself, not only its status,
			// record it.
			for _, name := range []string{"nano.handle " + call, "nano.act " + call, handleReport} {
				if s := spans[name]; len(s.Events) != 1 || s.Events[0].Name != "exception" || s.Status.Description == "" {
					t.Errorf("span %q has the events %v and the status %v, want the error recorded", name, s.Events, s.Status)
				}
			}
		})
	}
}

// attr returns the value of the attribute key of s, or an empty value.
func attr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// sameAttributes reports whether got and want hold the same attributes,
// in any order.
func sameAttributes(got, want []attribute.KeyValue) bool {
	g, w := attribute.NewSet(got...), attribute.NewSet(want...)
	return g.Equals(&w)
}
