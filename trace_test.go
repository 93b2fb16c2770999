package nano_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of W3C Trace Context without an Observer: servers pass it on as
// it came, and an Act made with a handler's context carries the trace
// context of the message the handler received.

// A trace context as a caller sends it: tracestate in two fields.
var (
	traceParent = []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	traceState  = []string{"congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"}
)

// seenTrace is the trace context a handler received.
type seenTrace struct {
	Traceparent, Tracestate []string
}

// reportTrace answers with the trace context of the message.
func reportTrace(_ context.Context, req *nano.Request) ([]byte, error) {
	return json.Marshal(seenTrace{req.Header.Values("Traceparent"), req.Header.Values("Tracestate")})
}

// checkTrace fails the test unless answer reports the trace context want
// (none when want is false).
func checkTrace(t *testing.T, answer []byte, want bool) {
	t.Helper()
	var got seenTrace
	if err := json.Unmarshal(answer, &got); err != nil {
		t.Fatalf("answer %q: %v", answer, err)
	}
	var wantParent, wantState []string
	if want {
		wantParent, wantState = traceParent, traceState
	}
	if !slices.Equal(got.Traceparent, wantParent) || !slices.Equal(got.Tracestate, wantState) {
		t.Errorf("the handler received traceparent %q, tracestate %q; want %q, %q", got.Traceparent, got.Tracestate, wantParent, wantState)
	}
}

// traceHeader is the header of a message that carries the trace context.
func traceHeader() http.Header {
	return http.Header{"Traceparent": traceParent, "Tracestate": traceState}
}

// TestTraceContextThroughTheServer: traceparent and tracestate reach the
// handler through a server without an Observer as the caller sent them,
// and a message without them gets none.
func TestTraceContextThroughTheServer(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	startHandlers(t, addr, map[string]nano.Handler{"role:trace": reportTrace})
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"with trace context", traceHeader()},
		{"without", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, http.MethodPost, "http://"+addr+"/", `{"Pattern":"role:trace"}`, tc.header)
			if status != http.StatusOK {
				t.Fatalf("%d %s", status, body)
			}
			checkTrace(t, []byte(body), tc.header != nil)
		})
	}
}

// TestActCarriesTraceContext: service A's handler calls service B with
// ActContext; B receives the trace context A's message came with when A
// calls with its handler's context, whether to B directly or through the
// server, and none when A calls with another context or its message had
// none.
func TestActCarriesTraceContext(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	startHandlers(t, addr, map[string]nano.Handler{"role:trace,at:b": reportTrace})
	// A calls B with its handler's context, or with a context of its
	// own when the message asks for one.
	for i, path := range actPaths {
		patternA := fmt.Sprintf("role:trace,at:a,path:%d", i)
		var a atomic.Pointer[nano.Service]
		s, svcAddr := startHandlers(t, addr, map[string]nano.Handler{
			patternA: func(ctx context.Context, req *nano.Request) ([]byte, error) {
				if strings.Contains(string(req.Body), `"Own":true`) {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
				}
				return a.Load().ActContext(ctx, []byte(`{"Pattern":"role:trace,at:b"}`), "role:trace,at:b")
			},
		}, func(o *nano.ServiceOptions) { o.PeerTTL = path.peerTTL })
		a.Store(s)
		for _, tc := range []struct {
			name   string
			to     string // the server's address or A's
			own    bool   // A calls B with a context of its own
			header http.Header
			want   bool
		}{
			{"A's context", addr, false, traceHeader(), true},
			{"A's context, A called directly", svcAddr, false, traceHeader(), true},
			{"A's own context", addr, true, traceHeader(), false},
			{"A's message without trace context", addr, false, nil, false},
		} {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				msg := fmt.Sprintf(`{"Pattern":%q,"Own":%t}`, patternA, tc.own)
				status, body := do(t, http.MethodPost, "http://"+tc.to+"/", msg, tc.header)
				if status != http.StatusOK {
					t.Fatalf("%d %s", status, body)
				}
				checkTrace(t, []byte(body), tc.want)
			})
		}
	}
}
